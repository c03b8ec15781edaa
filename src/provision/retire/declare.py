"""`retire.toml`: which legacy tables to retire, and how (read and validated, no database).

It lives beside the moves (`moves/retire.toml`) because a table is retired only after its move
is cut over: each entry names that move. One `[[table]]` per legacy table:

    [[table]]
    name = "dna_schema.entities"   # a table of a legacy schema
    move = "entities"              # its move (default: the move whose source it is)
    observe = "30d"                # the observe window: no use for this long before freeze
    compat_view = false            # keep the legacy name as a view over the new table (later)

Every error names the file and the entry: `retire.toml: table 2: what is wrong`.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from provision.errors import MoveFileError
from provision.move.declare import RETIRE_FILE, Declaration

_QUALIFIED = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_KEYS = {"name", "move", "observe", "compat_view"}


@dataclass(frozen=True)
class Retirement:
    """One legacy table's retirement as declared."""

    table: tuple[str, str]
    move: str
    observe: timedelta
    observe_text: str
    compat_view: bool

    @property
    def name(self) -> str:
        return ".".join(self.table)


@dataclass(frozen=True)
class RetireDeclaration:
    path: Path
    tables: tuple[Retirement, ...]
    checksum: str

    def only(self, name: str | None) -> tuple[Retirement, ...]:
        if name is None:
            return self.tables
        chosen = tuple(t for t in self.tables if t.name == name)
        if not chosen:
            raise MoveFileError(
                f"{RETIRE_FILE}: no table {name!r} is declared for retirement",
                hint=f"choose one of: {', '.join(t.name for t in self.tables) or '(none)'}",
            )
        return chosen


def parse_duration(text: object) -> timedelta | None:
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _fail(where: str, what: str, hint: str) -> MoveFileError:
    return MoveFileError(f"{RETIRE_FILE}: {where}{what}", hint=hint)


def parse(data: bytes, moves: Declaration) -> RetireDeclaration:
    """Validate `retire.toml` against the moves: every table is the source of a declared move
    (a table in not-moved.toml is never retired: its rows live nowhere else)."""
    try:
        doc: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _fail("", "not UTF-8", "save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail("", f"not valid TOML ({exc})", "fix the syntax") from None
    if set(doc) - {"table"} or not isinstance(doc.get("table", []), list):
        raise _fail("", "holds only [[table]] entries", "see docs/retire.md")
    by_source = {m.source: m for m in moves.moves}
    by_name = {m.name: m for m in moves.moves}
    not_moved = {n.table for n in moves.not_moved}
    tables: list[Retirement] = []
    for n, entry in enumerate(doc.get("table", []), 1):
        where = f"table {n}: "
        if not isinstance(entry, dict):
            raise _fail(where, "must be a [[table]] entry", "see docs/retire.md")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise _fail(
                where,
                f"unknown key {unknown[0]!r}",
                f"the keys of an entry: {', '.join(sorted(_KEYS))}",
            )
        name = entry.get("name")
        match = _QUALIFIED.match(name) if isinstance(name, str) else None
        if match is None:
            raise _fail(
                where,
                f"name must be a lower-case schema.table, not {name!r}",
                'e.g. name = "dna_schema.entities"',
            )
        table = (match.group(1), match.group(2))
        where = f"table {n} ({name}): "
        if table in not_moved:
            raise _fail(
                where,
                "is listed in not-moved.toml: its rows exist nowhere else, so it is never retired",
                "move it first (a move file), or leave it out of retire.toml",
            )
        move_name = entry.get("move")
        if move_name is None:
            if table not in by_source:
                raise _fail(
                    where,
                    "no move reads it (it is the source of no move file)",
                    "a table is retired after its move is cut over; declare the move first",
                )
            move = by_source[table]
        else:
            if not isinstance(move_name, str) or move_name not in by_name:
                raise _fail(
                    where,
                    f"move {move_name!r} is not a declared move",
                    f"one of: {', '.join(sorted(by_name))}",
                )
            move = by_name[move_name]
            if move.source != table:
                raise _fail(
                    where,
                    f"move {move_name} reads {move.source_name}, not {name}",
                    "name the move whose source is this table",
                )
        observe_text = entry.get("observe")
        observe = parse_duration(observe_text)
        if observe is None:
            raise _fail(
                where,
                f'observe must be a duration like "30d", "12h", "90m" or "0s", not '
                f"{observe_text!r}",
                "how long the table must go unused before it may be frozen",
            )
        compat = entry.get("compat_view", False)
        if not isinstance(compat, bool):
            raise _fail(where, "compat_view must be true or false", "default false")
        if any(t.table == table for t in tables):
            raise _fail(where, "is declared twice", "one entry per table")
        tables.append(Retirement(table, move.name, observe, str(observe_text), compat))
    return RetireDeclaration(
        moves.directory / RETIRE_FILE, tuple(tables), hashlib.sha256(data).hexdigest()
    )


def load(moves: Declaration) -> RetireDeclaration:
    """`retire.toml` of the moves directory (MoveFileError when absent or invalid)."""
    path = moves.directory / RETIRE_FILE
    if not path.is_file():
        raise MoveFileError(
            f"{path}: no retire.toml beside the move files",
            hint="declare the legacy tables to retire there (docs/retire.md)",
        )
    return parse(path.read_bytes(), moves)
