"""The move throttles itself (issue 21): `move pause|resume` from another process take effect at
the next batch boundary of a running `move run`, and a session waiting on a lock the move holds
makes it pause. No timed assertion: each step waits for what the run says or the database
shows (bounded only so that a broken run cannot hang the suite)."""

from __future__ import annotations

import json
import subprocess
import threading

from helpers import start
from provision.move.runner import MOVE_KEY
from tests.system.test_move import MOVES, move, moved_db, state, wait_until

__all__ = ["moved_db"]  # the fixture, used by name


def _until_said(proc: subprocess.Popen, fragment: str) -> list[str]:
    """stderr lines of `proc` up to the one holding `fragment` (EOF first: the run ended)."""
    seen = []
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        assert line, f"the run ended without saying {fragment!r}: {seen}"
        seen.append(line.rstrip())
        if fragment in line:
            return seen


def _held_run(db):
    """A `move run` in fixed batches of 1,000 keys, held at its first batch of dna.entity by a
    SHARE lock (its bounded, retried lock waits keep trying) until the caller releases it.
    The scenario's 2,000 entities make two batches: the first commits before the control is
    seen, the second is left to do (each batch runs under the proof, so fewer, larger batches
    keep the rest of the run short)."""
    hold = db.connect()
    hold.run("BEGIN")
    hold.run("LOCK TABLE dna.entity IN SHARE MODE")
    proc = start(
        "move", "run", "--dsn", db.admin_dsn, "--moves", str(MOVES),
        "--batch-target", "0", "--batch-size", "1000",
    )  # fmt: skip
    wait_until(lambda: bool(state(db, "name = 'entities'")), "the entities move began")
    _until_said(proc, "waiting: ")  # its first batch retries its lock wait: past the boundary
    return hold, proc


def _control(db) -> dict[str, str | None]:
    return dict(db.query("SELECT name, control FROM nucleus_move.state"))


def test_a_running_move_is_paused_and_resumed_by_another_process(moved_db):
    db = moved_db
    hold, proc = _held_run(db)
    try:
        paused = move(db, "pause", "entities")
        assert paused.code == 0, paused.err
        assert "copying (paused)" in paused.out and "move resume entities" in paused.out
        hold.run("ROLLBACK")  # the first batch commits, then the run sees the pause
        _until_said(proc, "entities: paused: paused by `move pause`")
        assert proc.poll() is None  # waiting, not ended

        status = move(db, "status", "--format", "json")
        assert status.code == 0, status.err
        entities = next(s for s in json.loads(status.out) if s["name"] == "entities")
        assert entities["control"] == "paused" and entities["phase"] == "copying"
        assert 0 < entities["copied"] < 2000

        resumed = move(db, "resume", "entities")
        assert resumed.code == 0, resumed.err
        _until_said(proc, "entities: resumed")
        assert proc.wait(300) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        hold.close()
    assert _control(db)["entities"] is None
    assert move(db, "verify").code == 0


def test_a_session_waiting_on_a_lock_the_move_holds_makes_it_pause(moved_db):
    db = moved_db
    hold, proc = _held_run(db)
    waiter = db.connect()
    waiter_pid = waiter.run("SELECT pg_backend_pid()")[0][0]
    failed: list[Exception] = []

    def wait_on_the_move() -> None:
        # The run's session-level move lock: this session queues behind the move's pid.
        try:
            waiter.run("SELECT pg_advisory_lock(:k)", k=MOVE_KEY)
        except Exception as exc:  # cancelled below, as intended
            failed.append(exc)

    thread = threading.Thread(target=wait_on_the_move)
    thread.start()
    try:
        wait_until(
            lambda: (
                db.query(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :p",
                    p=waiter_pid,
                )
                == [[True]]
            ),
            "the session waits on the move",
        )
        hold.run("ROLLBACK")
        said = _until_said(proc, "entities: paused: sessions wait on a lock the move holds")
        assert f"pid {waiter_pid}" in said[-1]
        assert proc.poll() is None

        db.query("SELECT pg_cancel_backend(:p)", p=waiter_pid)
        thread.join(60)
        assert failed  # the wait was cancelled, never granted while the move ran
        _until_said(proc, "entities: resumed")
        assert proc.wait(300) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        thread.join(60)
        hold.close()
        waiter.close()
    assert move(db, "verify").code == 0


def test_cancel_stops_at_a_boundary_keeping_every_batch_and_run_resumes(moved_db):
    db = moved_db
    hold, proc = _held_run(db)
    try:
        cancelled = move(db, "cancel", "entities")
        assert cancelled.code == 0, cancelled.err
        hold.run("ROLLBACK")
        assert proc.wait(300) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        hold.close()
    assert _control(db)["entities"] == "cancelled"
    copied = dict(db.query("SELECT name, copied FROM nucleus_move.state"))["entities"]
    assert 0 < copied < 2000  # the first batch kept, the rest left
    assert db.query("SELECT count(*) FROM dna.entity") == [[copied]]

    rerun = move(db, "run")
    assert rerun.code == 0, rerun.err
    assert _control(db)["entities"] is None
    assert move(db, "verify").code == 0


def test_a_verb_for_a_move_that_never_started_is_a_clear_error(moved_db):
    from helpers import assert_clean_error

    assert_clean_error(move(moved_db, "pause", "entities"), "has not started", "move run")
