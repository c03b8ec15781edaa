"""The pure parts of `retire`: retire.toml, the judgement of usage readings, the order of the
freeze's REVOKEs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provision.errors import MoveFileError
from provision.move import declare as move_declare
from provision.retire import declare, freeze
from provision.retire.observe import Grant, OwnRead, Usage, judge

MOVES = Path(__file__).resolve().parents[2] / "moves"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BOOT = datetime(2025, 12, 1, tzinfo=UTC)


def test_the_repository_retire_file_declares_every_moved_table_and_its_move():
    retire = declare.load(move_declare.load(MOVES))
    moves = {m.source_name: m.name for m in move_declare.load(MOVES).moves}
    assert {t.name: t.move for t in retire.tables} == moves
    assert all(t.observe == timedelta(days=30) for t in retire.tables)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            '[[table]]\nname = "dna_schema.interests"\nobserve = "2 weeks"\n',
            "observe must be a duration",
        ),
        ('[[table]]\nname = "dna_schema.dna_profiles"\nobserve = "1d"\n', "not-moved.toml"),
        ('[[table]]\nname = "dna_schema.nowhere"\nobserve = "1d"\n', "no move reads it"),
        ('[[table]]\nname = "Dna.X"\nobserve = "1d"\n', "lower-case schema.table"),
        (
            '[[table]]\nname = "dna_schema.interests"\nmove = "nope"\nobserve = "1d"\n',
            "move 'nope' is not a declared move",
        ),
        (
            '[[table]]\nname = "dna_schema.interests"\nobserve = "1d"\ncompat_view = "yes"\n',
            "compat_view must be true or false",
        ),
        ('[[table]]\nname = "dna_schema.interests"\nobserve = "1d"\n' * 2, "declared twice"),
        ("tables = 1\n", "holds only [[table]] entries"),
    ],
)
def test_a_bad_entry_is_named_with_its_file_and_number(body, fragment):
    with pytest.raises(MoveFileError) as error:
        declare.parse(body.encode(), move_declare.load(MOVES))
    assert error.value.message.startswith("retire.toml: ")
    assert fragment in error.value.message
    assert error.value.hint


def reading(at: int, seq: int = 0, ins: int = 0, **changes: object) -> Usage:
    usage = Usage(T0 + timedelta(hours=at), 42, None, BOOT, seq, 0, ins, 0, 0, None, None)
    return replace(usage, **changes)  # type: ignore[arg-type]


def test_clean_intervals_count_and_the_window_stays():
    j = judge(T0, "observation started", [reading(0), reading(1)], reading(2))
    assert j.intervals == 2 and j.window_started_at == T0 and j.last_use is None


def test_a_use_restarts_the_window_at_the_reading_that_showed_it():
    j = judge(T0, "observation started", [reading(0), reading(1, seq=3)], reading(2, seq=3))
    assert j.window_started_at == T0 + timedelta(hours=1)
    assert j.window_reason == "used: 3 sequential scan(s)"
    assert j.intervals == 1
    assert "3 sequential scan(s)" in (j.last_use or "")


def test_the_tools_own_reads_are_discounted_and_nothing_more():
    own = (OwnRead(T0 + timedelta(minutes=90), 2, 0),)
    mine = judge(T0, "observation started", [reading(0), reading(1)], reading(2, seq=2), own)
    assert mine.window_started_at == T0 and mine.intervals == 2
    more = judge(T0, "observation started", [reading(0), reading(1)], reading(2, seq=3), own)
    assert more.window_reason == "used: 1 sequential scan(s)"
    # An own read recorded outside the interval discounts nothing.
    later = (OwnRead(T0 + timedelta(hours=3), 2, 0),)
    other = judge(T0, "observation started", [reading(0), reading(1)], reading(2, seq=2), later)
    assert other.window_reason == "used: 2 sequential scan(s)"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"stats_reset": T0 + timedelta(hours=1)}, "statistics were reset"),
        ({"postmaster_start": T0 + timedelta(hours=1)}, "server restarted"),
        ({"relid": 43}, "re-created"),
        ({"seq_scan": 0}, "went down"),
    ],
)
def test_a_counter_reset_restarts_the_window_and_never_passes_as_no_use(change, reason):
    # Five scans before the reset; zero after it is no proof of no use.
    history = [reading(0, seq=5), reading(1, seq=5)]
    j = judge(T0, "observation started", history, reading(2, **{"seq_scan": 5, **change}))
    assert j.window_started_at == T0 + timedelta(hours=2)
    assert reason in j.window_reason
    assert j.intervals == 0
    assert j.restart is not None


def grant(grantee: str, grantor: str, privilege: str = "INSERT", **kw: object) -> Grant:
    return Grant(
        grantee,
        grantor,
        privilege,
        bool(kw.get("grantable", False)),
        None,
        bool(kw.get("acts", True)),
    )


def test_a_grant_passed_on_is_revoked_after_the_one_made_from_it():
    parent = grant("a", "owner", grantable=True)
    child = grant("b", "a")
    own = grant("owner", "owner", grantable=True)
    revoke, keep = freeze.split([own, parent, child])
    assert keep == []
    assert revoke.index(child) < revoke.index(parent)
    assert freeze.restore_order(revoke).index(parent) < freeze.restore_order(revoke).index(child)


def test_a_grant_by_a_role_this_session_cannot_act_for_is_kept_with_its_parent():
    parent = grant("a", "owner", grantable=True)
    child = grant("b", "a", acts=False)
    own = grant("owner", "owner", grantable=True)
    revoke, keep = freeze.split([own, parent, child])
    assert revoke == [own]
    assert set(keep) == {parent, child}
    assert "as a: REVOKE INSERT ON dna_schema.x FROM b GRANTED BY a" in freeze.kept_hint(
        child, ("dna_schema", "x")
    )


def test_revoke_and_grant_name_the_grantor_and_column():
    g = Grant("PUBLIC", "postgres", "UPDATE", True, "score")
    table = ("results_schema", "results")
    assert freeze.revoke_sql(g, table) == (
        "REVOKE UPDATE (score) ON results_schema.results FROM PUBLIC GRANTED BY postgres"
    )
    assert freeze.grant_sql(g, table).endswith("TO PUBLIC WITH GRANT OPTION GRANTED BY postgres")
