"""The scanner gate: real checkov and trivy on the real stacks, judged against the waivers.

The scanners come from .venv-scan (`make scan` installs it; `make test` runs `make scan`
first). Each gate run synthesizes the stacks as HCL in a fresh interpreter and scans them
(about 17 s), so the session runs the gate twice: on the real environments.toml, and on a
copy without one CIS flag. The other tests judge those real reports against edited waiver
lists, or run a scanner on a directory it cannot read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from stack_support import REAL_STACKS, REPO_ROOT

from provision.errors import ConfigError
from stacks import scan
from stacks.scan import Verdict, Waiver, judge, load_waivers

INSTANCE = "google_sql_database_instance.instance"


def _require_scanners() -> None:
    for tool in ("checkov", "trivy"):
        if not (scan.SCAN_VENV / "bin" / tool).exists():
            pytest.fail(f"{tool} is not installed in {scan.SCAN_VENV}: run `make scan` first")


def _config_without(tmp_path: Path, line: str) -> Path:
    text = (REPO_ROOT / "environments.toml").read_text()
    assert text.count(f"\n{line}\n") == 1, line
    path = tmp_path / "environments.toml"
    path.write_text(text.replace(f"\n{line}\n", "\n", 1))
    # environments.toml names its privileges file, beside it.
    (path.parent / "privileges.toml").write_text((REPO_ROOT / "privileges.toml").read_text())
    return path


@pytest.fixture(scope="session")
def real_verdict() -> Verdict:
    _require_scanners()
    return scan.run_gate(REPO_ROOT / "environments.toml")


@pytest.fixture(scope="session")
def verdict_without_log_connections(tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    _require_scanners()
    config = _config_without(tmp_path_factory.mktemp("config"), 'log_connections = "on"')
    return scan.run_gate(config)


@pytest.mark.slow
def test_the_real_stacks_pass_the_gate_with_every_waiver_used(real_verdict: Verdict) -> None:
    assert real_verdict.ok, "\n".join(real_verdict.problems())
    by_key = {(report.scanner, report.stack): report for report in real_verdict.reports}
    assert sorted(by_key) == sorted((s, stack) for s in scan.SCANNERS for stack in REAL_STACKS)
    for (scanner, stack), report in by_key.items():
        # Every failure is waived, and each stack really was read in full.
        assert report.failures, (scanner, stack)
        assert real_verdict.waived[(scanner, stack)] == len(report.failures)
        assert report.passed > 0 and not report.incomplete
    # Every resource of prod's stack: 2 APIs, instance, database, 2 adopted users (no
    # password), 3 secrets, the app secret's first version, the hook. No random_password: the
    # passwords are ephemeral, never a resource (README, "No password in Terraform state").
    assert by_key[("checkov", "prod")].coverage == "11 resources"
    assert by_key[("trivy", "prod")].coverage == "services sql"
    # The one per-stack waiver: prod keeps ENCRYPTED_ONLY, staging requires client certificates.
    assert "CKV_GCP_6" in {f.check for f in by_key[("checkov", "prod")].failures}
    assert "CKV_GCP_6" not in {f.check for f in by_key[("checkov", "staging")].failures}


@pytest.mark.slow
def test_removing_a_cis_flag_from_environments_toml_fails_the_gate_for_both_stacks(
    verdict_without_log_connections: Verdict,
) -> None:
    verdict = verdict_without_log_connections
    assert not verdict.ok
    unwaived = {(f.scanner, f.stack, f.check, f.resource) for f in verdict.unwaived}
    # Staging inherits the flag from prod, so both lose it; both scanners notice.
    assert unwaived == {
        (scanner, stack, check, INSTANCE)
        for stack in REAL_STACKS
        for scanner, check in (("checkov", "CKV_GCP_52"), ("trivy", "GCP-0016"))
    }
    assert not verdict.stale and not verdict.incomplete
    assert any("not waived: prod: checkov CKV_GCP_52" in line for line in verdict.problems())


@pytest.mark.slow
def test_a_waiver_that_covers_no_failure_fails_the_gate_as_stale(real_verdict: Verdict) -> None:
    waivers = load_waivers()
    extra = Waiver(
        scanner="checkov",
        check="CKV_GCP_52",
        resource=INSTANCE,
        stacks=("staging",),
        reason="log_connections is set, so this waiver covers nothing and must be refused",
    )
    verdict = judge(real_verdict.reports, (*waivers, extra))
    assert verdict.stale == (
        "stale waiver: checkov CKV_GCP_52 on google_sql_database_instance.instance in staging "
        "covers no failure; remove it from the waiver file (or the stack from its list)",
    )
    assert not verdict.ok
    # A real waiver listed for a stack where its check passes is stale there too.
    ssl = next(w for w in waivers if w.check == "CKV_GCP_6")
    widened = [_with_stacks(w, REAL_STACKS) if w is ssl else w for w in waivers]
    assert list(judge(real_verdict.reports, widened).stale) == [
        "stale waiver: checkov CKV_GCP_6 on google_sql_database_instance.instance in staging "
        "covers no failure; remove it from the waiver file (or the stack from its list)"
    ]


def _with_stacks(waiver: Waiver, stacks: tuple[str, ...]) -> Waiver:
    return waiver.model_copy(update={"stacks": stacks})


@pytest.mark.slow
def test_a_failure_without_its_waiver_fails_the_gate(real_verdict: Verdict) -> None:
    waivers = [w for w in load_waivers() if w.check != "GCP-0017"]
    verdict = judge(real_verdict.reports, waivers)
    assert {(f.scanner, f.stack, f.check) for f in verdict.unwaived} == {
        ("trivy", "prod", "GCP-0017"),
        ("trivy", "staging", "GCP-0017"),
    }
    # A waiver for another resource or scanner does not cover it either.
    moved = [
        w.model_copy(update={"scanner": "checkov"}) if w.check == "GCP-0017" else w
        for w in load_waivers()
    ]
    verdict = judge(real_verdict.reports, moved)
    assert {f.check for f in verdict.unwaived} == {"GCP-0017"}
    assert len(verdict.stale) == 2


@pytest.mark.slow
def test_checkov_on_the_json_form_parses_nothing_and_the_gate_says_so(
    synth_dir: Path, tmp_path: Path
) -> None:
    # The finding: prod's cdk.tf.json (with top-level import blocks) gives checkov
    # "Passed 0, Failed 0" and exit 0. The gate must not take that for a pass.
    _require_scanners()
    stack_dir = tmp_path / "prod"
    stack_dir.mkdir()
    shutil.copy(synth_dir / "stacks" / "prod" / "cdk.tf.json", stack_dir)
    assert "import" in json.loads((stack_dir / "cdk.tf.json").read_text())
    report = scan.read_checkov("prod", scan.run_checkov(stack_dir), [INSTANCE] * 13)
    assert report.passed == 0 and report.failures == ()
    assert report.incomplete == (
        "checkov evaluated nothing (0 passed, 0 failed)",
        "checkov read 0 of the stack's 13 resources",
    )
    verdict = judge([report], [])
    assert not verdict.ok
    assert verdict.problems()[0] == "prod: checkov evaluated nothing (0 passed, 0 failed)"


@pytest.mark.slow
def test_trivy_on_code_without_the_instance_is_an_incomplete_scan(tmp_path: Path) -> None:
    _require_scanners()
    empty = tmp_path / "empty"
    empty.mkdir()
    report = scan.read_trivy("prod", scan.run_trivy(empty, tmp_path / "cache"), [INSTANCE])
    assert "trivy evaluated nothing (0 passed, 0 failed)" in report.incomplete
    # trivy "passes" checks of services the code has nothing of; those do not count.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "main.tf").write_text('resource "random_password" "p" {\n  length = 32\n}\n')
    report = scan.read_trivy("prod", scan.run_trivy(partial, tmp_path / "cache"), [INSTANCE])
    assert report.incomplete == (
        "trivy evaluated nothing (0 passed, 0 failed)",
        "trivy reported nothing on the Google 'sql' service",
    )


def test_the_stack_resources_are_read_from_the_hcl() -> None:
    hcl = (
        'resource "google_sql_database" "database" {\n  name = "x"\n}\n'
        '  resource "not_at_line_start" "x" {}\n'
        'resource "random_password" "admin_password" {\n}\n'
    )
    assert scan.stack_resources(hcl) == (
        "google_sql_database.database",
        "random_password.admin_password",
    )


def test_every_waiver_names_its_scanner_check_resource_stacks_and_reason() -> None:
    waivers = load_waivers()
    assert waivers
    for waiver in waivers:
        assert set(waiver.stacks) <= set(REAL_STACKS), waiver
        assert len(waiver.reason.split()) >= 15, waiver.check


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[waiver]]\nscanner = 'checkov'\n", "waiver.0.check: Field required"),
        (
            "[[waiver]]\nscanner = 'tfsec'\ncheck = 'X'\nresource = 'a.b'\nstacks = ['prod']\n"
            "reason = 'a reason long enough to pass'\n",
            "waiver.0.scanner: Input should be 'checkov' or 'trivy'",
        ),
        (
            "[[waiver]]\nscanner = 'trivy'\ncheck = 'X'\nresource = 'a.b'\nstacks = ['prod']\n"
            "reason = 'because'\n",
            "waiver.0.reason: String should have at least 20 characters",
        ),
        (
            "[[waiver]]\nscanner = 'trivy'\ncheck = 'X'\nresource = 'a.b'\nstacks = []\n"
            "reason = 'a reason long enough to pass'\n",
            "waiver.0.stacks",
        ),
        ("[[waivers]]\n", "waivers: Extra inputs are not permitted"),
        ("[[waiver]\n", "is not valid TOML"),
    ],
)
def test_a_malformed_waiver_file_is_refused_naming_the_entry(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "waivers.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_waivers(path)
    assert expected in str(caught.value)


def test_the_same_waiver_twice_is_refused(tmp_path: Path) -> None:
    entry = (
        "[[waiver]]\nscanner = 'trivy'\ncheck = 'GCP-0017'\nresource = 'a.b'\n"
        "stacks = ['prod']\nreason = 'a reason long enough to pass'\n"
    )
    path = tmp_path / "waivers.toml"
    path.write_text(entry + entry.replace("['prod']", "['staging', 'prod']"))
    with pytest.raises(ConfigError, match="waives the same check"):
        load_waivers(path)
