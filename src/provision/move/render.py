"""How the moves are shown: progress of `run` (a bar on a terminal, lines otherwise, JSON lines
with `--format json`), the status table and the verdict of `verify`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from provision.hints import command
from provision.move.plan import CONFLICT_KINDS
from provision.move.runner import Event, EventKind, Listener, MoveStatus
from provision.move.verify import MoveVerdict

Echo = Callable[..., None]


def progress(echo: Echo, fmt: str, tty: bool) -> Listener:
    """The listener of `move run`. JSON: one line per event on stdout. Text on a terminal: a
    bar per copy (rows, rows/s, ETA); otherwise a line per step. Lock waits go to stderr."""
    if fmt == "json":
        return lambda event: echo(json.dumps(event.to_dict(), default=str))

    bar: Any = None
    rate = [0.0]
    started = [time.monotonic()]

    def close_bar() -> None:
        nonlocal bar
        if bar is not None:
            bar.render_finish()
            bar = None

    def listener(event: Event) -> None:
        nonlocal bar
        if event.kind == EventKind.WAITING:
            echo(f"waiting: {event.message}", err=True)
        elif event.kind == EventKind.START:
            started[0] = time.monotonic()
            echo(f"{event.move}: {event.message}")
            if event.total is not None and tty:
                bar = click.progressbar(
                    length=max(event.total, 1),
                    label=f"  {event.move}: legacy rows read",
                    show_pos=True,
                    item_show_func=lambda _: f"{rate[0]:,.0f} rows/s" if rate[0] else None,
                )
                bar.update(event.done)
        elif event.kind in (EventKind.BATCH, EventKind.REPAIR) and bar is not None:
            rate[0] = event.rate
            if event.total is not None and event.total > bar.length:
                bar.length = event.total
            bar.update(event.rows, current_item=event)
        elif event.kind == EventKind.BATCH:
            echo(f"  {event.message} ({event.done:,} of {event.total:,} read)")
        elif event.kind == EventKind.COPIED:
            close_bar()
            seconds = time.monotonic() - started[0]
            echo(f"  {event.message} ({seconds:.1f}s)")
        elif event.kind == EventKind.DIFF:
            echo(
                f"  catch-up ({event.message}): {event.rows:,} key(s) differ from what the move wrote"
            )
            if tty and event.rows:
                bar = click.progressbar(length=event.rows, label=f"  {event.move}: keys")
        elif event.kind == EventKind.UNCHANGED:
            echo(f"  catch-up: {event.message}")
        elif event.kind == EventKind.SYNCED:
            close_bar()
            counts = event.counts or {}
            conflicts = sum(counts.get(k, 0) for k in CONFLICT_KINDS)
            echo(
                f"  caught up: {counts.get('inserted', 0):,} inserted, "
                f"{counts.get('updated', 0):,} updated, {counts.get('deleted', 0):,} deleted, "
                f"{conflicts:,} conflict(s), {counts.get('waiting', 0):,} waiting for a parent"
            )
        elif event.kind == EventKind.CONFLICT:
            close_bar()
            echo(f"  conflicts: {event.rows:,} {event.message}")
            for key in event.keys:
                echo(f"    - {key}")
        elif event.kind == EventKind.CUTOVER:
            echo(f"  {event.message}: {event.rows:,} legacy row(s) written after cut-over")
            for key in event.keys:
                echo(f"    - legacy key {key.split(' ', 1)[1]} ({key.split(' ', 1)[0]})")
        elif event.kind == EventKind.SKIPPED:
            echo(f"  not moved by rule: {event.rows:,} row(s): {event.message}")
        elif event.kind == EventKind.NOTE:
            echo(f"  note: {event.message}")

    return listener


def _lag(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def status_text(statuses: Sequence[MoveStatus]) -> str:
    header = (
        "move",
        "phase",
        "copied",
        "pending",
        "behind",
        "conflicts",
        "lag",
        "passes",
        "last error",
    )
    rows = [
        (
            s.name,
            ("cut over" if s.cutover_at else s.phase) + (f" ({s.control})" if s.control else ""),
            f"{s.copied:,}",
            "-" if s.pending is None else f"{s.pending:,}",
            "-" if s.behind is None else f"{s.behind} range(s) differ",
            str(sum(s.conflicts.values())),
            _lag(s.lag_s),
            str(s.passes),
            (s.last_error or "-")[:80],
        )
        for s in statuses
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    for s in statuses:
        for kind, count in sorted(s.conflicts.items()):
            lines.append(f"{s.name}: {count:,} conflict(s): {CONFLICT_KINDS.get(kind, kind)}")
        if s.control == "paused":
            lines.append(
                f"{s.name}: paused by `move pause`; `{command(f'move resume {s.name}')}` goes on"
            )
        elif s.control == "cancelled":
            lines.append(
                f"{s.name}: cancelled by `move cancel`; committed batches kept, "
                f"the next `{command('move run')}` resumes"
            )
        if s.cutover_at:
            lines.append(
                f"{s.name}: cut over at {s.cutover_at}; the move no longer writes {s.target}"
            )
        for reason, count in s.skipped:
            if count:
                lines.append(f"{s.name}: {count:,} row(s) not moved by rule: {reason}")
    lines.append(
        "pending: legacy rows left to copy (copying), or keys the last comparison found and "
        "not yet repaired; behind: legacy key ranges changed since the last pass (the next "
        "`move run` reads only those); lag: since the last pass"
    )
    return "\n".join(lines)


def cutover_text(status: MoveStatus, differ: Sequence[tuple[str, int]]) -> str:
    lines = [
        f"{status.name}: cut over at {status.cutover_at}: `move run` never writes {status.target} "
        "again; legacy rows written from now on are reported, not copied"
    ]
    if differ:
        lines.append(
            f"  {len(differ):,} legacy row(s) differ from what the move wrote and will not be "
            "copied (reported by every `move run`):"
        )
        lines += [f"    - legacy key {key} ({how})" for how, key in differ[:20]]
    return "\n".join(lines)


def verify_text(verdicts: Sequence[MoveVerdict]) -> str:
    lines = []
    for v in verdicts:
        if v.outcome == "unfinished":
            lines.append(
                f"{v.name}: not finished ({v.phase}): run `{command(f'move run --only {v.name}')}`"
            )
            continue
        head = (
            f"{v.name}: {v.outcome} ({v.source_rows:,} mapped legacy rows, {v.target_rows:,} rows "
            f"in {v.target}, {v.ranges_compared} range(s) compared)"
        )
        lines.append(head)
        if v.service_rows:
            lines.append(
                f"  {v.service_rows:,} row(s) of {v.target} written by services (not compared)"
            )
        if v.cutover_at:
            lines.append(
                f"  cut over at {v.cutover_at}: differences since are services' writes or legacy rows written after cut-over"
            )
        for r in v.differing:
            where = (
                "target rows no legacy row maps to"
                if r.lo is None
                else f"legacy keys {r.lo}..{r.hi}"
            )
            lines.append(
                f"  - {where}: {r.source_rows} vs {r.target_rows} rows, hash {r.source_hash} vs "
                f"{r.target_hash}, {r.differing} differ (e.g. {', '.join(r.sample)})"
            )
        for reason, count in v.skipped:
            if count:
                lines.append(f"  not moved by rule: {count:,} row(s): {reason}")
    return "\n".join(lines)
