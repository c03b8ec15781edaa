"""Small SQL helpers shared by the catalog reader, the planner and the executor."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache


@cache
def _quoter() -> Callable[[str], str]:
    # SQLAlchemy's PostgreSQL quoting (its list of reserved words), loaded on first use rather
    # than at import: `--help` and usage errors must not pay for SQLAlchemy.
    from sqlalchemy.dialects import postgresql

    quote: Callable[[str], str] = postgresql.dialect().identifier_preparer.quote  # type: ignore[no-untyped-call]
    return quote


def ident(*parts: str) -> str:
    """A (qualified) identifier, quoted only where PostgreSQL needs it (`dna."values"`)."""
    quote = _quoter()
    return ".".join(quote(p) for p in parts)


def error_fields(exc: BaseException) -> dict[str, str]:
    """PostgreSQL's error fields (C: SQLSTATE, M: message, ...) from a pg8000 error, wrapped by
    SQLAlchemy or not; empty when the error did not come from the server."""
    original = getattr(exc, "orig", None) or exc
    args = getattr(original, "args", ())
    return args[0] if args and isinstance(args[0], dict) else {}


def server_message(exc: BaseException) -> str:
    """`message (SQLSTATE code)` of a server error, else the exception's first line."""
    fields = error_fields(exc)
    if fields.get("M"):
        return fields["M"] + (f" (SQLSTATE {fields['C']})" if fields.get("C") else "")
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
