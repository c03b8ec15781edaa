"""The denylist that keeps secrets out of Terraform's state, on hand-made stacks."""

from __future__ import annotations

from stacks.state_secrets import secret_carriers

EPHEMERAL = "${ephemeral.random_password.admin_password.result}"


def _stack(**blocks: object) -> dict[str, object]:
    return {"terraform": {"required_version": ">= 1.11"}, **blocks}


def test_write_only_arguments_fed_by_an_ephemeral_password_pass() -> None:
    stack = _stack(
        ephemeral={"random_password": {"admin_password": {"length": 32}}},
        resource={
            "google_sql_user": {
                "admin_user": {
                    "name": "postgres",
                    "password_wo": EPHEMERAL,
                    "password_wo_version": 1,
                }
            },
            "google_secret_manager_secret_version": {
                "v": {"secret": "s", "secret_data_wo": EPHEMERAL, "secret_data_wo_version": 1}
            },
        },
        output={"secret_id": {"value": "${google_secret_manager_secret.s.secret_id}"}},
    )
    assert secret_carriers(stack) == []


def test_every_kind_of_carrier_is_named_by_its_path() -> None:
    stack = _stack(
        resource={
            "random_password": {"p": {"length": 32}},
            "google_sql_user": {"u": {"name": "x", "password": "${random_password.p.result}"}},
            "google_sql_database_instance": {"i": {"root_password": "${var.root}"}},
            "google_secret_manager_secret_version": {"v": {"secret_data": "literal"}},
            "terraform_data": {"t": {"input": EPHEMERAL}},
            "google_service_account_key": {"k": {"service_account_id": "a"}},
        },
        data={"google_secret_manager_secret_version": {"d": {"secret": "s"}}},
        output={"o": {"value": "${data.google_secret_manager_secret_version.d.secret_data}"}},
    )
    found = secret_carriers(stack)
    for expected in (
        "resource.random_password.p: its state holds a secret",
        "resource.google_sql_user.u.password: argument 'password' is stored in the state",
        "resource.google_sql_user.u.password: refers to random_password",
        "resource.google_sql_database_instance.i.root_password: argument 'root_password' is "
        "stored in the state",
        "resource.google_secret_manager_secret_version.v.secret_data: argument 'secret_data' is "
        "stored in the state",
        "resource.terraform_data.t.input: an ephemeral value outside a write-only (*_wo) argument",
        "resource.google_service_account_key.k: its state holds a secret",
        "data.google_secret_manager_secret_version.d: its state holds what it reads",
        "output.o.value: refers to data.google_secret_manager_secret_version, which carries a "
        "secret",
    ):
        assert any(p.startswith(expected) for p in found), (expected, found)
    assert all("literal" not in problem for problem in found)


def test_a_write_only_argument_with_a_literal_is_a_secret_in_the_code() -> None:
    stack = _stack(resource={"google_sql_user": {"u": {"password_wo": "hunter2-hunter2"}}})
    assert secret_carriers(stack) == [
        "resource.google_sql_user.u.password_wo: a write-only argument must take an ephemeral value"
    ]


def test_a_sensitive_output_is_still_in_the_state() -> None:
    stack = _stack(output={"x": {"value": "${google_sql_database.d.name}", "sensitive": True}})
    assert secret_carriers(stack) == [
        "output.x: marked sensitive (outputs are stored in the state)"
    ]
