"""The scanner gate: checkov and trivy on every synthesized stack, against one waiver file.

`make scan` (a prerequisite of `make test`) runs `python -m stacks.scan`. It

1. synthesizes every deployable environment of environments.toml as HCL (`cdktf synth
   --hcl`'s output). HCL, because checkov cannot read the JSON form: the top-level
   `import` blocks of prod's cdk.tf.json make it parse nothing and report "Passed 0,
   Failed 0" with exit code 0; trivy reads the JSON but misplaces nested blocks in it
   (it reports backups and TLS missing on an instance that has both);
2. runs both scanners, installed in their own virtualenv (`.venv-scan`, see
   stacks/scan-requirements.txt) so that they constrain none of the project's
   dependencies, offline: checkov with `--skip-download` and BC_SKIP_MAPPING, trivy with
   its embedded checks (`--skip-check-update`, no telemetry, no version check);
3. reads their JSON reports and fails on
   - any failed check that no waiver in stacks/scan-waivers.toml covers,
   - any waiver that covers no failure (a stale waiver hides the next regression),
   - a scan that evaluated nothing (0 passed and 0 failed), or less than the stack holds:
     checkov must count every resource of the stack; trivy, which reports its passes per
     service rather than per resource, must report on the service of every resource type
     it has checks for.

Reading the reports and judging them (`read_checkov`, `read_trivy`, `judge`) are pure
functions of the parsed JSON, tested on real scanner output; running things is the shell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provision.config import CONFIG_FILE_NAME
from provision.errors import ConfigError, ProvisionError

REPO_ROOT = Path(__file__).resolve().parent.parent
SCAN_VENV = REPO_ROOT / ".venv-scan"
WAIVER_FILE = REPO_ROOT / "stacks" / "scan-waivers.toml"
NODE = REPO_ROOT / "node_modules" / ".bin" / "node"

Scanner = Literal["checkov", "trivy"]
SCANNERS: tuple[Scanner, ...] = ("checkov", "trivy")

# trivy attributes its passes to a (provider, service), never to a resource, and reports a
# service's checks only when the scanned code holds a resource of it: the services of the
# resource types it has checks for are how the gate knows trivy read those resources.
TRIVY_SERVICES: Mapping[str, str] = {"google_sql_database_instance": "sql"}

# A resource block of cdktf's HCL output: `resource "TYPE" "NAME" {` at the start of a line.
_RESOURCE = re.compile(r'^resource "([^"]+)" "([^"]+)"', re.MULTILINE)


class ScanError(ProvisionError):
    """Raised when a scanner or the HCL synth cannot run, or a report cannot be read."""


# -- the waiver file -----------------------------------------------------------------------


class Waiver(BaseModel):
    """One reviewed exception: a check of one scanner, on one resource, in some stacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scanner: Scanner
    check: str = Field(min_length=1)
    resource: str = Field(pattern=r"^[a-z0-9_]+\.[A-Za-z0-9_-]+$")
    stacks: tuple[str, ...] = Field(min_length=1)
    reason: str = Field(min_length=20, description="why the failure is accepted")

    def covers(self, failure: Failure) -> bool:
        return (
            self.scanner == failure.scanner
            and self.check == failure.check
            and self.resource == failure.resource
            and failure.stack in self.stacks
        )


class _WaiverFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    waiver: tuple[Waiver, ...] = ()


def load_waivers(path: Path = WAIVER_FILE) -> tuple[Waiver, ...]:
    """The waivers of the file; a malformed entry is an error naming it."""
    try:
        data = tomllib.loads(path.read_text())
        waivers = _WaiverFile(**data).waiver
    except FileNotFoundError:
        raise ConfigError(f"waiver file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(
            f"{path} is invalid: {problems}",
            hint="each [[waiver]] needs scanner, check, resource, stacks and a reason",
        ) from None
    keys = [(w.scanner, w.check, w.resource, stack) for w in waivers for stack in w.stacks]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path} waives the same check on the same resource and stack twice")
    return waivers


# -- reading the reports (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One failed check on one resource of one stack."""

    scanner: Scanner
    stack: str
    check: str
    resource: str
    title: str

    def __str__(self) -> str:
        return f"{self.stack}: {self.scanner} {self.check} on {self.resource}: {self.title}"


@dataclass(frozen=True)
class ScanReport:
    """What one scanner said about one stack, and whether it read all of it."""

    scanner: Scanner
    stack: str
    version: str
    passed: int
    failures: tuple[Failure, ...]
    coverage: str  # what the scanner evaluated, for the summary
    incomplete: tuple[str, ...] = ()  # why the scan did not cover the whole stack


def stack_resources(hcl: str) -> tuple[str, ...]:
    """`TYPE.NAME` of every resource in a stack's synthesized HCL."""
    return tuple(f"{kind}.{name}" for kind, name in _RESOURCE.findall(hcl))


def read_checkov(stack: str, report: Mapping[str, Any], resources: Sequence[str]) -> ScanReport:
    """checkov's `-o json` report of one stack (a bare summary when it found no resource)."""
    summary = report.get("summary", report)
    failures = tuple(
        Failure("checkov", stack, item["check_id"], item["resource"], item["check_name"])
        for item in report.get("results", {}).get("failed_checks", [])
    )
    passed = int(summary.get("passed", 0))
    counted = int(summary.get("resource_count", 0))
    incomplete = []
    if passed + len(failures) == 0:
        incomplete.append("checkov evaluated nothing (0 passed, 0 failed)")
    if counted < len(resources):
        incomplete.append(f"checkov read {counted} of the stack's {len(resources)} resources")
    if summary.get("parsing_errors"):
        incomplete.append(f"checkov could not parse {summary['parsing_errors']} file(s)")
    return ScanReport(
        scanner="checkov",
        stack=stack,
        version=str(summary.get("checkov_version", "?")),
        passed=passed,
        failures=failures,
        coverage=f"{counted} resources",
        incomplete=tuple(incomplete),
    )


def read_trivy(stack: str, report: Mapping[str, Any], resources: Sequence[str]) -> ScanReport:
    """trivy's `config --format json --include-non-failures` report of one stack.

    Passes are counted only in the services of the stack's resources: trivy also "passes"
    the checks of services the stack has nothing of (AWS, Azure, other Google services)."""
    kinds = {resource.split(".", 1)[0] for resource in resources}
    expected = {TRIVY_SERVICES[kind] for kind in kinds if kind in TRIVY_SERVICES}
    results = [
        item
        for result in report.get("Results") or []
        for item in result.get("Misconfigurations") or []
    ]
    seen: set[str] = set()
    passed = 0
    failures: list[Failure] = []
    for item in results:
        cause = item.get("CauseMetadata") or {}
        service = cause.get("Service", "")
        if cause.get("Provider") == "Google" and service in expected:
            seen.add(service)
        if item.get("Status") == "FAIL":
            failures.append(
                Failure("trivy", stack, item["ID"], cause.get("Resource", "?"), item["Title"])
            )
        elif item.get("Status") == "PASS" and service in expected:
            passed += 1
    incomplete = []
    if passed + len(failures) == 0:
        incomplete.append("trivy evaluated nothing (0 passed, 0 failed)")
    for service in sorted(expected - seen):
        incomplete.append(f"trivy reported nothing on the Google {service!r} service")
    return ScanReport(
        scanner="trivy",
        stack=stack,
        version=str((report.get("Trivy") or {}).get("Version", "?")),
        passed=passed,
        failures=tuple(failures),
        coverage=f"services {', '.join(sorted(seen)) or 'none'}",
        incomplete=tuple(incomplete),
    )


@dataclass(frozen=True)
class Verdict:
    """The gate's judgement over every report."""

    reports: tuple[ScanReport, ...]
    unwaived: tuple[Failure, ...]
    stale: tuple[str, ...]
    incomplete: tuple[str, ...]
    waived: dict[tuple[Scanner, str], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.unwaived or self.stale or self.incomplete)

    def problems(self) -> list[str]:
        return [
            *(f"not waived: {failure}" for failure in self.unwaived),
            *self.stale,
            *self.incomplete,
        ]


def judge(reports: Iterable[ScanReport], waivers: Sequence[Waiver]) -> Verdict:
    """Sort every failure into waived or not, and find stale waivers and incomplete scans."""
    reports = tuple(reports)
    scanned = {(report.scanner, report.stack) for report in reports}
    used: set[tuple[int, str]] = set()
    unwaived: list[Failure] = []
    waived: dict[tuple[Scanner, str], int] = {}
    for report in reports:
        for failure in report.failures:
            covering = [i for i, waiver in enumerate(waivers) if waiver.covers(failure)]
            if not covering:
                unwaived.append(failure)
                continue
            used.update((i, failure.stack) for i in covering)
            key = (report.scanner, report.stack)
            waived[key] = waived.get(key, 0) + 1
    stale = [
        f"stale waiver: {waiver.scanner} {waiver.check} on {waiver.resource} in {stack} "
        "covers no failure; remove it from the waiver file (or the stack from its list)"
        for i, waiver in enumerate(waivers)
        for stack in waiver.stacks
        if (i, stack) not in used
        and ((waiver.scanner, stack) in scanned or stack not in {s for _, s in scanned})
    ]
    incomplete = [
        f"{report.stack}: {problem}" for report in reports for problem in report.incomplete
    ]
    return Verdict(reports, tuple(unwaived), tuple(stale), tuple(incomplete), waived)


# -- running things (the shell) ------------------------------------------------------------


def _scanner_env() -> dict[str, str]:
    env = dict(os.environ)
    # checkov: no download of Bridgecrew's guidelines or check-id mapping, no upload.
    env.update(BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    env.pop("BC_API_KEY", None)
    return env


def _run(command: Sequence[str], *, env: Mapping[str, str], what: str) -> str:
    try:
        result = subprocess.run(
            list(command), capture_output=True, text=True, env=dict(env), timeout=600
        )
    except FileNotFoundError:
        raise ScanError(
            f"{command[0]} is not installed", hint="run `make scan` (it installs .venv-scan)"
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ScanError(f"{what} failed (exit {result.returncode}): {tail}")
    return result.stdout


def synth_hcl(config: Path, outdir: Path) -> dict[str, Path]:
    """Synthesize every deployable environment of `config` as HCL; return each stack's
    directory by name. It runs in its own interpreter: cdktf reads SYNTH_HCL_OUTPUT when
    the jsii kernel starts, and a caller may already have one running in JSON mode."""
    env = dict(os.environ)
    env.update(
        SYNTH_HCL_OUTPUT="true",
        CHECKPOINT_DISABLE="1",
        JSII_NODE=str(NODE),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "src")]),
    )
    code = (
        "import sys\n"
        "from main import append_hcl_blocks, build_app\n"
        "from provision.config import load_environments\n"
        "app = build_app(load_environments(sys.argv[1]).values(), outdir=sys.argv[2])\n"
        "app.synth()\n"
        "append_hcl_blocks(app)\n"
    )
    _run(
        [sys.executable, "-c", code, str(config), str(outdir)],
        env=env,
        what="cdktf synth (HCL)",
    )
    stacks = {path.parent.name: path.parent for path in sorted(outdir.glob("stacks/*/cdk.tf"))}
    if not stacks:
        raise ScanError(f"cdktf synth wrote no stack to {outdir}")
    return stacks


def run_checkov(stack_dir: Path) -> dict[str, Any]:
    output = _run(
        [
            str(SCAN_VENV / "bin" / "checkov"),
            "--directory", str(stack_dir),
            "--framework", "terraform",
            "--skip-download",
            "--soft-fail",  # failed checks are judged here; a non-zero exit is a crash
            "--output", "json",
        ],
        env=_scanner_env(),
        what=f"checkov on {stack_dir.name}",
    )  # fmt: skip
    return _json(output, "checkov")


def run_trivy(stack_dir: Path, cache_dir: Path) -> dict[str, Any]:
    output = _run(
        [
            str(SCAN_VENV / "bin" / "trivy"), "config",
            "--misconfig-scanners", "terraform",
            "--skip-check-update",  # the checks embedded in the binary; nothing downloaded
            "--disable-telemetry",
            "--skip-version-check",
            "--include-non-failures",
            "--exit-code", "0",
            "--cache-dir", str(cache_dir),
            "--format", "json",
            "--quiet",
            str(stack_dir),
        ],
        env=_scanner_env(),
        what=f"trivy on {stack_dir.name}",
    )  # fmt: skip
    return _json(output, "trivy")


def _json(output: str, scanner: str) -> dict[str, Any]:
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        raise ScanError(f"{scanner} did not print a JSON report: {exc}") from None
    if not isinstance(data, dict):
        raise ScanError(f"{scanner} printed a {type(data).__name__}, not one report")
    return data


def scan(stacks: Mapping[str, Path], workdir: Path) -> list[ScanReport]:
    """Run both scanners on every stack directory and read their reports."""
    reports = []
    for name, stack_dir in sorted(stacks.items()):
        resources = stack_resources((stack_dir / "cdk.tf").read_text())
        reports.append(read_checkov(name, run_checkov(stack_dir), resources))
        reports.append(read_trivy(name, run_trivy(stack_dir, workdir / "trivy-cache"), resources))
    return reports


def run_gate(config: Path, waiver_file: Path = WAIVER_FILE) -> Verdict:
    """Synthesize, scan and judge; the waiver file is read first, so that a bad one fails fast."""
    waivers = load_waivers(waiver_file)
    with tempfile.TemporaryDirectory(prefix="nucleus-scan-") as tmp:
        workdir = Path(tmp)
        stacks = synth_hcl(config, workdir / "cdktf.out")
        return judge(scan(stacks, workdir), waivers)


def render(verdict: Verdict, seconds: float) -> str:
    """The gate's summary: one line per scanner and stack, then every problem."""
    lines = []
    for report in verdict.reports:
        waived = verdict.waived.get((report.scanner, report.stack), 0)
        lines.append(
            f"  {report.stack:<10} {report.scanner + ' ' + report.version:<16} "
            f"{report.passed:>3} passed, {len(report.failures):>2} failed "
            f"({waived} waived)  [{report.coverage}]"
        )
    lines += [f"  problem: {problem}" for problem in verdict.problems()]
    status = "ok" if verdict.ok else f"FAILED, {len(verdict.problems())} problem(s)"
    lines.append(f"scan: {status} in {seconds:.1f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config = Path(args[0]) if args else REPO_ROOT / CONFIG_FILE_NAME
    waiver_file = Path(args[1]) if len(args) > 1 else WAIVER_FILE
    started = time.perf_counter()
    print(f"scan: checkov and trivy on the stacks of {config} (waivers: {waiver_file})")
    try:
        verdict = run_gate(config, waiver_file)
    except ProvisionError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    print(render(verdict, time.perf_counter() - started))
    if not verdict.ok:
        print("error: the scanner gate found problems (listed above)", file=sys.stderr)
        print(
            f"hint: fix environments.toml or the stack, or add a reviewed [[waiver]] with its "
            f"reason to {waiver_file.name}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
