"""Every ```bash block of README.md and docs/*.md runs, in order, exactly as written.

One fresh temporary folder per file. README.md starts from a fresh copy of the repository
(its first command installs edgepack from it into a new .venv, then runs the quickstart;
later blocks `source .venv/bin/activate`), so it runs without the test venv on PATH.
docs/*.md start in an empty folder with the test venv's bin first on PATH.

The one line not run is README's `bash scripts/test.sh`: it is the command CI is running
at that moment (.ci/run), so the test checks that .ci/run runs exactly it instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docs import SHELL_LANGUAGES, blocks, run_blocks, shell_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
CI_COMMAND = "bash scripts/test.sh"
VENV_BIN = Path(sys.executable).parent
README_TIMEOUT = 1200.0
"""Fresh venv install (~1.5 min with a warm pip cache), quickstart (~35 s), the flow (~20 s)."""
DOC_TIMEOUT = 600.0


def _clean_env(*, with_test_venv: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "VIRTUAL_ENV", "PYTHONPATH")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != VENV_BIN.resolve()]
    if with_test_venv:
        path.insert(0, str(VENV_BIN))
        # The test venv may be an editable install of another checkout: run this one's code.
        env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = os.pathsep.join(path)
    return env


def _fresh_copy(target: Path) -> Path:
    """The repository as a fresh clone would have it: tracked (and new, not ignored) files only."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "edgepack-quickstart"))
        return target
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _files_with_shell_blocks() -> list[Path]:
    return [path for path in DOCS if shell_blocks(path)]


def test_readme_has_shell_blocks_and_ci_runs_its_second_command() -> None:
    first = shell_blocks(README)[0]
    assert CI_COMMAND in [line.strip() for line in first.lines], "README's first block names the command CI runs"
    ci = (ROOT / ".ci" / "run").read_text()
    assert CI_COMMAND in [line.strip() for line in ci.splitlines()], f".ci/run must run `{CI_COMMAND}`, as README says"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_no_command_block_escapes_the_runner(path: Path) -> None:
    """A ```sh or ```console block would look run but never be: fence it bash (runs) or text (does not)."""
    stray = [f"{path.name}:{b.line}: ```{b.lang}" for b in blocks(path) if b.lang in SHELL_LANGUAGES]
    assert not stray, "fence these ```bash (CI runs them verbatim) or ```text (not run): " + ", ".join(stray)


@pytest.mark.slow
@pytest.mark.parametrize("path", _files_with_shell_blocks(), ids=lambda p: p.name)
def test_doc_shell_blocks_run_verbatim(path: Path, tmp_path: Path) -> None:
    runs = shell_blocks(path)
    if path == README:
        cwd = _fresh_copy(tmp_path / "edgepack")
        env, timeout = _clean_env(with_test_venv=False), README_TIMEOUT
        skip = {CI_COMMAND: "CI itself runs this (.ci/run); the test above checks that"}
    else:
        cwd = tmp_path / "work"
        cwd.mkdir()
        env, timeout, skip = _clean_env(with_test_venv=True), DOC_TIMEOUT, {}
    outcome = run_blocks(path, runs, cwd=cwd, env=env, timeout=timeout, skip=skip)
    if outcome.failure is not None:
        pytest.fail(outcome.failure, pytrace=False)


def test_the_runner_names_the_file_line_command_and_output(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(
        "# guide\n\n```bash\necho first > made.txt\ncd sub 2>/dev/null || mkdir sub\n```\n\n"
        "```text\nnot run: exit 9\n```\n\n"
        "```bash\necho carried over: $(cat made.txt)\nsleep 60 &\nfalse --flag\necho never\n```\n",
        encoding="utf-8",
    )
    outcome = run_blocks(doc, shell_blocks(doc), cwd=tmp_path, env=_clean_env(with_test_venv=True), timeout=60)
    assert outcome.failure is not None
    head = outcome.failure.splitlines()[0]
    assert head.startswith("guide.md:15: `false --flag` exited 1 (block at line 12)"), outcome.failure
    assert "carried over: first" in outcome.failure and "never" not in outcome.output
    assert "not run" not in outcome.output


def test_the_runner_passes_a_good_file_and_ends_background_jobs(tmp_path: Path) -> None:
    doc = tmp_path / "ok.md"
    pidfile = tmp_path / "sleeper.pid"
    doc.write_text(f"```bash\nsleep 300 &\necho $! > {pidfile}\n```\n", encoding="utf-8")
    outcome = run_blocks(doc, shell_blocks(doc), cwd=tmp_path, env=_clean_env(with_test_venv=True), timeout=60)
    assert outcome.failure is None and outcome.returncode == 0
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
