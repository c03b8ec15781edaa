"""The README runs as written: its shell blocks, in order, against the emulation.

Every fenced block whose info string is `bash` or `sh` is run, in the order of the file, each
by `bash -euo pipefail` from the repository root, with `nucleus-provision` on PATH (the
worktree's .venv) and `NUCLEUS_LOCAL_STATE_DIR` pointing at a fresh directory: what one block
sets (`eval "$(nucleus-provision local env)"`, `STAGING_DIR=...`) the next one sees, as in a
reader's shell. A block that must not run carries the marker line

    <!-- readme-test: skip (why) -->

right above it; the reason is required, and the list is kept tiny (today: the quick start's
`make demo` / `make test`, which are the demo and the whole suite). A failing block fails the
test with the block and its output. Afterwards every emulation started in the test's
directory is stopped (the README keeps its second emulation beside the first, in
`$NUCLEUS_LOCAL_STATE_DIR-staging`).

The blocks of docs/*.md are not run: they are about real Google Cloud projects (`gcloud`,
`--env prod`, `--env staging`); the one that works on the emulation (`local connect`) is in
the README's session too. Every `nucleus-provision` command in them (fenced or indented
blocks) is parsed by the real CLI instead, so an option renamed or removed fails here.

Also a script: `python tests/system/test_readme.py [FILE ...]` runs the blocks of README.md
(or of the files named) the same way and exits 1 at the first failing block.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RUN_LANGUAGES = {"bash", "sh"}
SKIP = re.compile(r"^<!-- readme-test: skip \((?P<why>[^)]+)\) -->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[\w-]*)\s*$")
# Every block may take this long (a `local up`, an apply, a move of the scenario's rows).
BLOCK_TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, with their skip markers."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = len(opening["indent"])
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{{indent}}}```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.match(previous.strip())
        found.append(
            Block(
                path, start + 1, opening["info"], "\n".join(body), marker["why"] if marker else None
            )
        )
        i += 1
    return found


def runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language in RUN_LANGUAGES and b.skip is None]


def _environment(state_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # A reader's shell has none of the test run's own settings.
        if not k.startswith(("NUCLEUS_", "PYTEST_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NUCLEUS_LOCAL_STATE_DIR"] = str(state_dir)
    return env


def _variables(env: dict[str, str]) -> set[str]:
    """The names of the variables a bare `bash` has (they are never carried over)."""
    out = subprocess.run(
        ["bash", "-c", "compgen -v"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def run_blocks(paths: list[Path], workdir: Path) -> list[str]:
    """Run the blocks of `paths` in order; return the failures (block and output), stopping
    at the first. Stops every emulation started under `workdir` at the end."""
    state_dir = workdir / "emulation"
    carried = workdir / "variables.sh"
    carried.write_text("")
    env = _environment(state_dir)
    baseline = _variables(env) | {"BASH_REMATCH", "PIPESTATUS", "_"}
    failures: list[str] = []
    try:
        for path in paths:
            for block in runnable(path):
                # The variables a block sets (exported or not) are the next block's, as in a
                # reader's shell; `declare -p` writes them so that bash reads them back.
                script = (
                    f"source {shlex.quote(str(carried))}\n{block.text}\n"
                    f"declare -p > {shlex.quote(str(carried))}.new\n"
                )
                proc = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", script],
                    cwd=ROOT,
                    env=env,
                    # No terminal, as in CI, however pytest was started: a command that would
                    # ask a question must say so in the README (e.g. an approval flag).
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=BLOCK_TIMEOUT,
                )
                if proc.returncode != 0:
                    failures.append(
                        f"{block.where}: exit {proc.returncode}\n--- block\n{block.text}\n"
                        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
                    )
                    return failures
                declared = Path(f"{carried}.new").read_text().splitlines()
                carried.write_text(
                    "".join(
                        line + "\n"
                        for line in declared
                        if (m := re.match(r"declare -[-x]+ (\w+)=", line))
                        and m[1] not in baseline
                        and m[1] not in env
                    )
                )
    finally:
        _stop_emulations(workdir, env)
    return failures


def _stop_emulations(workdir: Path, env: dict[str, str]) -> None:
    for instance in sorted(workdir.rglob("instance.json")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "provision",
                "local",
                "down",
                "--state-dir",
                str(instance.parent),
            ],
            env=env,
            capture_output=True,
            timeout=120,
        )


def commands_in(path: Path) -> list[tuple[int, list[str]]]:
    """The `nucleus-provision ...` command lines of a markdown file's code (fenced blocks and
    indented ones), with their continuation lines, comments left out."""
    found: list[tuple[int, list[str]]] = []
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        text = line.strip()
        if not text.startswith("nucleus-provision "):
            continue
        while text.endswith("\\") and n + 1 < len(lines):
            n += 1
            text = text[:-1] + " " + lines[n].strip()
        args = shlex.split(text, comments=True)
        found.append((n + 1, args[1 : 1 + _end(args[1:])]))
    return found


def _end(args: list[str]) -> int:
    """Where the command ends (a redirection or a pipe after it)."""
    for i, arg in enumerate(args):
        if arg in {">", "|", "||", "&&"} or arg.startswith(">"):
            return i
    return len(args)


def parse(args: list[str]) -> None:
    """Parse a command line as the CLI would, without running it (click's own parser)."""
    import click

    from provision.cli import cli

    ctx = cli.make_context("nucleus-provision", list(args))
    command: click.Command = cli
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, remaining = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, remaining, parent=ctx)
        command = sub


def test_every_command_in_the_docs_parses() -> None:
    seen = 0
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for line, args in commands_in(path):
            try:
                parse(args)
            except Exception as exc:  # click's UsageError, or anything: name the line
                raise AssertionError(f"{path.name}:{line}: {' '.join(args)}: {exc}") from None
            seen += 1
    assert seen > 10, seen  # the docs do show commands: the scan found them


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings (outside code blocks)."""
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#+ (.*)$", line)):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def test_links_between_the_readme_and_the_docs_resolve() -> None:
    """The restructure moved sections into docs/: every relative link (file and anchor)
    still points at something."""
    broken = []
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if file and not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{path.name}: {target}")
    assert not broken, broken


def test_the_readme_marks_only_the_quick_start_as_not_run() -> None:
    skipped = [b for b in blocks(README) if b.skip is not None]
    assert [b.text.split()[:2] for b in skipped] == [["make", "demo"]], skipped
    assert runnable(README), "the README has no shell block to run"


def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    failures = run_blocks([README], tmp_path)
    assert not failures, failures[0]


def test_blocks_and_markers_are_found_as_a_reader_sees_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n<!-- readme-test: skip (the whole suite) -->\n\n```bash\nmake test\n```\n\n"
        "```bash\necho one\n```\n\n- a list item:\n\n  ```sh\n  echo two\n  ```\n\n"
        "```json\n{}\n```\n\n```\nplain\n```\n"
    )
    found = blocks(page)
    assert [(b.language, b.text, b.skip) for b in found] == [
        ("bash", "make test", "the whole suite"),
        ("bash", "echo one", None),
        ("sh", "echo two", None),
        ("json", "{}", None),
        ("", "plain", None),
    ]
    assert [b.text for b in runnable(page)] == ["echo one", "echo two"]
    failing = tmp_path / "failing.md"
    failing.write_text("```bash\nexport STAGING_X=1\n```\n\n```bash\necho $STAGING_X; false\n```\n")
    (failure,) = run_blocks([failing], tmp_path)
    assert failure.startswith("failing.md:5: exit 1") and "--- stdout\n1\n" in failure


if __name__ == "__main__":
    files = [Path(a).resolve() for a in sys.argv[1:]] or [README]
    with tempfile.TemporaryDirectory(prefix="readme-test-") as directory:
        problems = run_blocks(files, Path(directory))
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
