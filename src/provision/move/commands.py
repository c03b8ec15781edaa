"""One plain function per `move` verb (`run`, `status`, `verify`, `cutover`), as `provision.commands`
has for the engine's verbs: they return data and raise ProvisionError; the CLI prints.
`demo_step` is what the README demo runs after `apply`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from provision import commands, db
from provision.desired import DesiredState
from provision.hints import command
from provision.locks import DEFAULT_POLICY, LockPolicy
from provision.move import declare, plan, runner
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


def control(
    target: db.Target,
    desired: DesiredState,
    name: str,
    verb: str,
    moves_dir: Path | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> list[MoveStatus]:
    """Record `move pause|resume|cancel NAME` in the move's state row: a running `move run`
    reads it at its next batch boundary (`provision.move.throttle`). Returns the status."""
    from contextlib import ExitStack

    from sqlalchemy import Connection, text

    from provision.errors import MoveFailed
    from provision.move import throttle

    declaration = declare.load(moves_dir, desired.layout)
    (move,) = declaration.only(name)
    with commands.session(target, desired), ExitStack() as stack:
        mover = runner.Mover(stack, target, Options(policy=policy), lambda e: None)

        def started(c: Connection) -> bool:
            # Two statements: a query naming a missing table fails before it is evaluated.
            if c.execute(text(f"SELECT to_regclass('{plan.SCHEMA}.state') IS NULL")).scalar_one():
                return False
            return bool(
                c.execute(
                    text(f"SELECT EXISTS (SELECT FROM {plan.SCHEMA}.state WHERE name = :n)"),
                    {"n": move.name},
                ).scalar_one()
            )

        if not mover.read("status", started):
            raise MoveFailed(
                f"move {move.name} has not started: there is nothing to {verb}",
                hint=f"start it with `{command(f'move run --only {move.name}')}`",
            )
        mover.transaction(
            f"{move.name}: {verb}",
            [
                (throttle.CONTROL_DDL, {}),
                (
                    f"UPDATE {plan.SCHEMA}.state SET control = :c, updated_at = now() "
                    "WHERE name = :n",
                    {"c": throttle.VERBS[verb], "n": move.name},
                ),
            ],
        )
        return mover.read("status", lambda c: runner._statuses(c, [move]))


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
    "control",
    "cutover",
    "demo_step",
    "run",
    "status",
    "verify",
]
