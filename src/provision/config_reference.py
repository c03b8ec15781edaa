"""The reference of every `environments.toml` key, generated from the pydantic models of
`provision.config` (field names, types, defaults and descriptions), so that it cannot drift
from what the loader accepts. `docs/environments.md` is its output, and a unit test fails
when the committed file is stale:

    python -m provision.config_reference            # rewrite docs/environments.md
    python -m provision.config_reference --check    # exit 1 if it is stale

A pure function renders the text; only `main` reads or writes a file.
"""

from __future__ import annotations

import ast
import enum
import functools
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from provision.config import (
    AppLoginConfig,
    BackupConfig,
    DatabaseFlag,
    Environment,
    GroupConfig,
    LegacyConfig,
    MaintenanceConfig,
    PasswordValidationPolicy,
    PgauditConfig,
    UserConfig,
)

COMMAND = "python -m provision.config_reference"
OUTPUT = Path("docs") / "environments.md"

# Keys that are written differently in the file than the model holds them.
_FILE_SPELLING: dict[tuple[type[BaseModel], str], tuple[str, str]] = {
    (Environment, "privileges"): ("string: a TOML file beside environments.toml", "none"),
}
# Keys the model has but the file does not (the table's own name).
_NOT_A_KEY: set[tuple[type[BaseModel], str]] = {(Environment, "name")}

# The tables of environments.toml, in reading order: (heading, model, what it is).
_SECTIONS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("[environments.NAME]", Environment, "One environment: a Cloud SQL instance, its database "
     "and its users. `extends = \"OTHER\"` (a string, not a model field) starts from another "
     "environment's resolved table and overrides key by key, sub-tables merged."),
    ("[environments.NAME.users.admin], [environments.NAME.users.owner]", UserConfig,
     "A built-in database user and where its password lives."),
    ("[environments.NAME.users.app]", AppLoginConfig,
     "The services' password login, created by `apply`; two logins alternate at rotation."),
    ("[environments.NAME.backup]", BackupConfig, "Automated backups."),
    ("[environments.NAME.maintenance]", MaintenanceConfig, "The maintenance window."),
    ("[[environments.NAME.database_flags]]", DatabaseFlag,
     "Extra database flags, one table per flag."),
    ("[environments.NAME.password_validation_policy]", PasswordValidationPolicy,
     "What Cloud SQL accepts as a built-in user's password."),
    ("[environments.NAME.pgaudit]", PgauditConfig, "pgaudit and its flags."),
    ("privileges.toml: [groups.NAME]", GroupConfig,
     "A group role of the privileges declaration (the file `privileges` names), the same in "
     "every environment that names it."),
    ("privileges.toml: [legacy]", LegacyConfig,
     "The legacy layout: protected schemas, and the new names of old ones. Managed schemas "
     "are not declared: they are the ones the migrations create (schema.lock)."),
)  # fmt: skip


def _type(annotation: Any) -> str:
    """A TOML-minded name of a field's type: string, integer, list of ..., one of ...."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = " or ".join(_type(a) for a in rest)
        return inner + (" (optional)" if len(rest) < len(args) else "")
    if origin is tuple:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"table of {_type(args[0])} = {_type(args[1])}"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, BaseModel):
            return "table"
        return {str: "string", int: "integer", bool: "boolean", float: "number"}.get(
            annotation, annotation.__name__
        )
    return str(annotation)


def _toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return f'"{value.value}"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "(table)"
    if isinstance(value, BaseModel):
        return "(table below)"
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _toml(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return _toml(field.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@functools.cache
def _attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The string literal under each `name: T` of the model's class body and of its bases
    (PEP 257's attribute docstrings), cleaned as pydantic's use_attribute_docstrings does."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not issubclass(cls, BaseModel) or cls.__module__.startswith("pydantic"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[node.target.id] = inspect.cleandoc(following.value.value)
    return found


def description(model: type[BaseModel], name: str) -> str:
    """A field's meaning: its Field(description=...), else its attribute docstring."""
    field = model.model_fields[name]
    return field.description or _attribute_docstrings(model).get(name, "")


def _table(model: type[BaseModel]) -> list[str]:
    hints = typing.get_type_hints(model)
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        if (model, name) in _NOT_A_KEY:
            continue
        kind, default = _FILE_SPELLING.get((model, name), (_type(hints[name]), _default(field)))
        rows.append(
            f"| `{name}` | {_cell(kind)} | `{_cell(default)}` | {_cell(description(model, name))} |"
        )
    return rows


def render() -> str:
    """The whole reference, as committed in docs/environments.md."""
    lines = [
        "# environments.toml reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the models of src/provision/config.py; "
        "do not edit by hand. tests/unit/test_config_reference.py fails when it is stale. -->",
        "",
        "Every key the loader accepts, with its type, its default and what it means. The file "
        "holds one `[environments.NAME]` table per environment; `--env NAME` picks one. An "
        "unknown key is an error (the models forbid extra keys). The loader finds the file "
        "as `--config PATH`, `$NUCLEUS_PROVISION_CONFIG`, or the nearest `environments.toml` "
        "in the working directory or a parent.",
    ]
    for heading, model, about in _SECTIONS:
        lines += ["", f"## {heading}", "", about, "", *_table(model)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    """Write the reference under `root` (the checkout), or with `--check` exit 1 if stale."""
    args = sys.argv[1:] if argv is None else argv
    root = root or Path(__file__).resolve().parents[2]
    path = root / OUTPUT
    text = render()
    if "--check" in args:
        if not path.exists() or path.read_text() != text:
            print(f"{OUTPUT} is stale; refresh it with `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
