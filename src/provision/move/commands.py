"""One plain function per `move` verb (`run`, `status`, `verify`, `cutover`), as `provision.commands`
has for the engine's verbs: they return data and raise ProvisionError; the CLI prints.
`demo_step` is what the README demo runs after `apply`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from provision import commands, db
from provision.desired import DesiredState
from provision.locks import DEFAULT_POLICY, LockPolicy
from provision.move import declare, runner
from provision.move import verify as compare
from provision.move.runner import Listener, MoveStatus, Options
from provision.move.verify import MoveVerdict


def run(
    target: db.Target,
    desired: DesiredState,
    moves_dir: Path | None = None,
    only: str | None = None,
    options: Options = runner.DEFAULT_OPTIONS,
    listener: Listener = lambda e: None,
    stop: Callable[[], bool] = lambda: False,
) -> list[MoveStatus]:
    """Copy what is left of each move, then catch up (repeatedly with options.follow)."""
    declaration = declare.load(moves_dir, desired.layout)  # a bad file opens nothing
    with commands.session(target, desired) as seen:
        return runner.run(
            target,
            declaration,
            declaration.only(only),
            seen.layout.protected_schemas,
            options,
            listener,
            stop,
        )


def status(
    target: db.Target,
    desired: DesiredState,
    moves_dir: Path | None = None,
    only: str | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> list[MoveStatus]:
    """Per move: phase, rows copied, rows pending, lag, last error (read-only)."""
    declaration = declare.load(moves_dir, desired.layout)
    with commands.session(target, desired):
        return runner.status(target, declaration, declaration.only(only), policy)


def cutover(
    target: db.Target,
    desired: DesiredState,
    name: str,
    moves_dir: Path | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> tuple[MoveStatus, list[tuple[str, int]]]:
    """Record the cut-over of move `name`: `run` never writes its target again."""
    declaration = declare.load(moves_dir, desired.layout)
    (move,) = declaration.only(name)
    with commands.session(target, desired) as seen:
        return runner.cutover(
            target, declaration, move, seen.layout.protected_schemas, Options(policy=policy)
        )


def verify(
    target: db.Target,
    desired: DesiredState,
    moves_dir: Path | None = None,
    only: str | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
    range_size: int = compare.DEFAULT_RANGE_SIZE,
) -> list[MoveVerdict]:
    """Compare the mapped legacy rows with the new tables, per key range (read-only)."""
    declaration = declare.load(moves_dir, desired.layout)
    with commands.session(target, desired) as seen:
        return compare.verify(
            target,
            declaration,
            declaration.only(only),
            seen.layout.protected_schemas,
            policy,
            range_size,
        )


def demo_step(
    target: Callable[[], db.Target],
    desired: DesiredState,
    echo: Callable[..., None],
    moves_dir: Path | None = None,
) -> bool:
    """The demo's Phase 4: move the legacy scenario's rows, then verify. True when equal.
    `target` opens a fresh target per step, as separate runs would."""
    from provision.move import render

    echo("move run:")
    run(target(), desired, moves_dir, listener=render.progress(echo, "text", tty=False))
    verdicts = verify(target(), desired, moves_dir)
    echo(render.verify_text(verdicts))
    return all(v.outcome == "equal" for v in verdicts)


__all__ = [
    "MoveStatus",
    "MoveVerdict",
    "Options",
    "cutover",
    "demo_step",
    "run",
    "status",
    "verify",
]
