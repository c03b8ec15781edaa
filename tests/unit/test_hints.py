"""Hints name commands with the target flags of the invocation that printed them, and never a
password (provision.hints); `inspect --role/--schema` narrows the report (provision.report)."""

from __future__ import annotations

import contextvars

from provision import hints


def _in_context(**target: str | None) -> str:
    def run() -> str:
        hints.set_target(**target)
        return hints.command("move run --only entities")

    return contextvars.copy_context().run(run)


def test_a_hint_repeats_the_environment_and_the_config() -> None:
    assert _in_context(env_name="local") == "nucleus-provision move run --only entities --env local"
    assert _in_context(env_name="staging", config="/etc/my envs.toml") == (
        "nucleus-provision move run --only entities --config '/etc/my envs.toml' --env staging"
    )


def test_a_hint_repeats_a_dsn_without_its_password() -> None:
    shown = _in_context(
        dsn="postgresql://postgres:s3cret-pw@127.0.0.1:5432/nucleus_v12?sslmode=require",
        owner_dsn="postgresql://nucleus@127.0.0.1:5432/nucleus_v12?password=other-s3cret",
    )
    assert "s3cret" not in shown
    assert shown == (
        "nucleus-provision move run --only entities "
        "--dsn 'postgresql://postgres:PASSWORD@127.0.0.1:5432/nucleus_v12?sslmode=require' "
        "--owner-dsn postgresql://nucleus:PASSWORD@127.0.0.1:5432/nucleus_v12"
    )


def test_without_a_recorded_target_a_hint_names_the_bare_command() -> None:
    assert contextvars.Context().run(hints.command, "plan") == "nucleus-provision plan"


def test_an_unparseable_dsn_is_never_repeated() -> None:
    shown = _in_context(dsn="postgresql://postgres:pw@host:notaport/db")
    assert "pw@" not in shown and "PASSWORD" in shown
