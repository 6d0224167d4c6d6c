"""Run the shell blocks of a Markdown file as a reader would: in order, verbatim, in one shell.

The convention every doc follows: a ```bash block runs, exactly as written, in a fresh
folder, after the ```bash blocks above it in the same file (so `cd`, `source`, files
written and background jobs carry over from block to block); anything that cannot run
that way (a device, docker, a remote host) and every output sample is fenced ```text.

All blocks of one file go to one ``bash`` process, each block behind a marker line, with
``set -Eeo pipefail`` and an ERR trap: the first failing command stops the run and is
reported with the file, the Markdown line it sits on, and the output of its block.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RUN_LANGUAGES = frozenset({"bash"})
"""Fences that run."""
SHELL_LANGUAGES = frozenset({"sh", "shell", "console", "zsh", "ksh", "shell-session", "bash-session", "sh-session"})
"""Fences that look like commands but would silently never run: a doc must say bash or text."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`{]*)")
_BLOCK_MARK = "@@edgepack-doc-block"
_FAIL_MARK = "@@edgepack-doc-failed"


@dataclass(frozen=True, kw_only=True)
class Block:
    """One fenced block of a Markdown file."""

    path: Path
    """The Markdown file."""
    line: int
    """1-based line of the opening fence."""
    lang: str
    """The info string's first word, lower case ('' for a bare fence)."""
    lines: tuple[str, ...]
    """The block's content lines, the fence's indentation removed."""


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order (CommonMark fences: ``` or ~~~, 3 or more)."""
    found: list[Block] = []
    text = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(text):
        match = _FENCE.match(text[i])
        if match is None:
            i += 1
            continue
        indent, fence, lang = len(match["indent"]), match["fence"], match["lang"].lower()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        start, body = i, []
        i += 1
        while i < len(text) and not closing.match(text[i]):
            line = text[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        found.append(Block(path=path, line=start + 1, lang=lang, lines=tuple(body)))
        i += 1  # past the closing fence (or the end of the file: an unclosed fence runs to the end)
    return found


def shell_blocks(path: Path) -> list[Block]:
    """The blocks of ``path`` that CI runs."""
    return [b for b in blocks(path) if b.lang in RUN_LANGUAGES]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How the run of one file's blocks went."""

    returncode: int
    output: str
    """stdout and stderr of the whole run, interleaved as they came."""
    failure: str | None
    """A report naming the file, the line, the command and its block's output; None when all passed."""


def _script(runs: Sequence[Block], skip: Mapping[str, str]) -> tuple[str, dict[int, int]]:
    """The bash script, and which Markdown line each script line came from."""
    lines = [
        "set -Eeo pipefail",
        # $LINENO inside the trap is the failing command's line; the command text goes last.
        f"trap '__rc=$?; printf \"\\n{_FAIL_MARK} %s %s %s\\n\" \"$__rc\" \"$LINENO\" \"$BASH_COMMAND\"; exit $__rc' ERR",
    ]
    origin: dict[int, int] = {}
    for block in runs:
        lines.append(f"printf '%s\\n' '{_BLOCK_MARK} {block.line}'")
        for offset, line in enumerate(block.lines, 1):
            origin[len(lines) + 1] = block.line + offset
            lines.append(f": {skip[line.strip()]!r}" if line.strip() in skip else line)
    return "\n".join(lines) + "\n", origin


def run_blocks(
    path: Path,
    runs: Sequence[Block],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    skip: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``runs`` (blocks of ``path``) in one bash in ``cwd``; ``skip`` maps an exact command
    line to the reason it is not run (it becomes a no-op ``:`` with that text)."""
    script, origin = _script(runs, dict(skip or {}))
    started = time.monotonic()
    # Output to a file, not a pipe: a background job (a collector started with `&`) keeps a
    # pipe open after the shell has exited, and the run is over when the shell is.
    log_path = cwd.parent / f".{cwd.name}.{path.stem}.doc-output"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", script, path.name],
            cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: background jobs left behind are ended below
        )
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _end_group(process.pid)
            process.wait()
    raw = log_path.read_bytes()
    output = raw.decode("utf-8", errors="replace")
    elapsed = time.monotonic() - started
    failure = None
    if timed_out or process.returncode != 0:
        failure = _report(path, runs, output, origin, process.returncode, timed_out, timeout, elapsed)
    return Outcome(returncode=process.returncode, output=output, failure=failure)


def _end_group(pgid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _report(
    path: Path, runs: Sequence[Block], output: str, origin: Mapping[int, int], returncode: int, timed_out: bool,
    timeout: float, elapsed: float,
) -> str:
    by_block: dict[int, list[str]] = {}
    current: int | None = None
    failed: tuple[str, int, str] | None = None
    for line in output.splitlines():
        if line.startswith(_BLOCK_MARK + " "):
            current = int(line.split()[1])
            by_block[current] = []
        elif line.startswith(_FAIL_MARK + " "):
            _, rc, lineno, command = (line.split(" ", 3) + [""])[:4]
            failed = (rc, origin.get(int(lineno), 0), command)
        elif current is not None:
            by_block.setdefault(current, []).append(line)
    block_line = current if current is not None else (runs[0].line if runs else 0)
    if timed_out:
        head = f"{path.name}: the block at line {block_line} was still running after {timeout:g} s; stopped"
    elif failed is not None:
        rc, md_line, command = failed
        head = f"{path.name}:{md_line}: `{command}` exited {rc} (block at line {block_line})"
    else:
        head = f"{path.name}: the shell exited {returncode} in the block at line {block_line}"
    shown = "\n".join(by_block.get(block_line, output.splitlines())[-80:])
    return f"{head}, after {elapsed:.0f} s\n--- output of the block at {path.name}:{block_line} (last 80 lines) ---\n{shown}"
