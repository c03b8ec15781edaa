"""How a blocker is named: what an operator needs to find it, and never more than it sees."""

from __future__ import annotations

from provision.locks import Blocker, LockPolicy


def test_a_visible_blocker_is_named_with_its_application_state_age_and_first_query_line():
    blocker = Blocker(
        4242,
        "nucleus_app",
        "billing-worker",
        "idle in transaction",
        12.34,
        "SELECT *\nFROM dna.entity FOR UPDATE",
    )
    assert blocker.describe() == (
        "pid 4242 (user nucleus_app, application billing-worker, idle in transaction for "
        "12.3s: SELECT *)"
    )


def test_a_blocker_whose_query_is_hidden_says_so_and_how_to_see_it():
    hidden = Blocker(7, "nucleus", None, None, None, "<insufficient privilege>")
    assert "pid 7 (user nucleus" in hidden.describe()
    assert "pg_read_all_stats" in hidden.describe()


def test_the_default_lock_wait_is_well_under_a_second():
    assert LockPolicy().timeout < 1 and LockPolicy().timeout_ms == 200


def test_the_hint_to_end_several_blockers_ends_each_of_them():
    # pg_terminate_backend(a, b) would end only a (b is a timeout in milliseconds).
    from provision.locks import Attempts, BlockerWatch

    def never() -> None:
        raise AssertionError("no connection is opened to compose the hint")

    watch = BlockerWatch(never)  # type: ignore[arg-type]
    watch.seen = [Blocker(7, "nucleus", None, None, None, None)]
    assert "SELECT pg_terminate_backend(7))" in Attempts(LockPolicy(), watch)._gave_up("x").hint
    watch.seen = [Blocker(p, "nucleus", None, None, None, None) for p in (7, 9, 7)]
    assert (
        "SELECT pg_terminate_backend(pid) FROM unnest(ARRAY[7, 9]) AS pid)"
        in Attempts(LockPolicy(), watch)._gave_up("x").hint
    )
