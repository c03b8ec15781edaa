"""The desired state is derived from environments.toml and written once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from provision.config import load_environment, load_environments
from provision.desired import VERSION_TABLE, desired_state
from provision.findings import FAILING, Finding, Severity, verify
from provision.migrations import load_migrations

ROOT = Path(__file__).resolve().parents[2]


def test_staging_declares_prods_desired_state_and_local_differs_only_by_pgaudit_and_iam():
    migrations = load_migrations(ROOT / "bootstrap_sql")
    envs = load_environments(ROOT / "environments.toml")
    prod, staging, local = (
        desired_state(envs[n], migrations) for n in ("prod", "staging", "local")
    )
    assert staging.fingerprint() == prod.fingerprint()
    assert prod.layout.extensions == ("vector", "pgaudit")
    # The emulated server cannot load pgaudit (environments.toml says why); nothing else differs.
    assert local.layout.extensions == ("vector",)
    # Its IAM identities are its own (emulated service accounts); the groups are prod's.
    assert local.privileges.groups == prod.privileges.groups
    assert (
        replace(
            local,
            layout=prod.layout,
            privileges=replace(local.privileges, members=prod.privileges.members),
        ).fingerprint()
        == prod.fingerprint()
    )


def test_owner_and_admin_come_from_the_environments_users():
    prod = load_environment("prod", ROOT / "environments.toml")
    desired = desired_state(prod)
    assert (desired.owner, desired.admin) == (prod.users.owner.name, prod.users.admin.name)
    renamed = prod.model_copy(
        update={"users": prod.users.model_copy(update={"owner": prod.users.admin})}
    )
    assert desired_state(renamed).owner == prod.users.admin.name
    assert desired_state(renamed).fingerprint() != desired.fingerprint()


def test_the_version_table_names_each_column_once_with_its_type():
    vt = VERSION_TABLE
    assert vt.column_names == (
        "id",
        "migration_name",
        "applied_at",
        "version",
        "description",
        "executed_at",
        "checksum",
        "execution_time_ms",
    )
    assert [c.name for c in vt.added_columns] == list(vt.column_names[3:])
    assert all(c.definition for c in vt.columns)


def test_verify_fails_on_every_failing_severity_and_on_pending_work():
    assert verify([]).matches
    for severity in Severity:
        verdict = verify([Finding("x", severity, "m")])
        assert verdict.matches is (severity not in FAILING)
    assert FAILING == frozenset(Severity)


def test_the_hint_for_missing_iam_users_names_what_creates_them_for_the_environment():
    from provision.concerns.privileges import _IAM_USERS_CDKTF, _IAM_USERS_LOCAL

    envs = load_environments(ROOT / "environments.toml")
    prod, local = (desired_state(envs[n]) for n in ("prod", "local"))
    # The emulation's IAM users come from `local up` (which keeps the data), not cdktf.
    assert local.privileges.iam_users_from_local_up
    assert not prod.privileges.iam_users_from_local_up
    assert "local up" in _IAM_USERS_LOCAL and "cdktf" not in _IAM_USERS_LOCAL
    assert "cdktf deploy" in _IAM_USERS_CDKTF
    # Who creates IAM users is not declared state: the stacks' hook does not re-run for it.
    flipped = replace(prod, privileges=replace(prod.privileges, iam_users_from_local_up=True))
    assert flipped.fingerprint() == prod.fingerprint()
