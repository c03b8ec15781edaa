"""How the moves are shown: progress of `run` (a bar on a terminal, lines otherwise, JSON lines
with `--format json`), the status table and the verdict of `verify`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

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
            if event.total is not None:
                echo(
                    f"{event.move}: {event.message} ({event.done:,} of {event.total:,} rows copied)"
                )
                if tty:
                    bar = click.progressbar(
                        length=max(event.total, 1),
                        label=f"  {event.move}",
                        show_pos=True,
                        item_show_func=lambda _: f"{rate[0]:,.0f} rows/s" if rate[0] else None,
                    )
                    bar.update(event.done)
            else:
                echo(f"{event.move}: {event.message}")
        elif event.kind == EventKind.BATCH and bar is not None:
            rate[0] = event.rate
            if event.total is not None and event.total > bar.length:
                bar.length = event.total
            bar.update(event.rows, current_item=event)
        elif event.kind == EventKind.COPIED:
            close_bar()
            seconds = time.monotonic() - started[0]
            echo(f"  copied: {event.done:,} rows in the target ({seconds:.1f}s)")
        elif event.kind == EventKind.DIFF:
            echo(f"  catch-up: {event.rows:,} key(s) differ")
        elif event.kind == EventKind.SYNCED:
            echo(f"  synced ({event.rows:,} repaired)")
        elif event.kind == EventKind.SKIPPED:
            echo(f"  not moved by rule: {event.rows:,} row(s): {event.message}")
        elif event.kind == EventKind.NOTE:
            echo(f"  note: {event.message}")

    return listener


def _lag(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def status_text(statuses: Sequence[MoveStatus]) -> str:
    header = ("move", "phase", "copied", "pending", "lag", "passes", "last error")
    rows = [
        (
            s.name,
            s.phase,
            f"{s.copied:,}",
            "-" if s.pending is None else f"{s.pending:,}",
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
        for reason, count in s.skipped:
            if count:
                lines.append(f"{s.name}: {count:,} row(s) not moved by rule: {reason}")
    lines.append(
        "pending: legacy rows left to copy (copying), or keys the last comparison found and "
        "not yet repaired; lag: since the target last equalled the legacy table"
    )
    return "\n".join(lines)


def verify_text(verdicts: Sequence[MoveVerdict]) -> str:
    lines = []
    for v in verdicts:
        if v.outcome == "unfinished":
            lines.append(f"{v.name}: not finished ({v.phase}): run `nucleus-provision move run`")
            continue
        head = (
            f"{v.name}: {v.outcome} ({v.source_rows:,} mapped legacy rows, {v.target_rows:,} rows "
            f"in {v.target}, {v.ranges_compared} range(s) compared)"
        )
        lines.append(head)
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
