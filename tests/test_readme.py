"""The README's commands and the lab demo's hints work as typed.

On a fresh machine kpc exists only as the checkout's ``.venv/bin/kpc``: a command the README
tells someone to type in the checkout must name a program that is there, and every kpc
command the README or the demo names must exist.
"""

from __future__ import annotations

import re
import shlex
import tomllib

from typer.testing import CliRunner

from appliance.cli.main import app
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
DEMO = (REPO / "scripts" / "lab-demo").read_text()
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def commands(markdown: str) -> list[list[str]]:
    """Each command in indented code blocks and in `code spans`, as words (comments, leading
    VAR=value assignments and sudo dropped)."""
    texts = [line[4:] for line in markdown.splitlines() if line.startswith("    ")]
    texts += re.findall(r"`([^`\n]+)`", markdown)
    found = []
    for text in texts:
        try:
            words = shlex.split(text, comments=True)
        except ValueError:  # prose in a code span, not a command
            continue
        while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
            words.pop(0)
        if words:
            found.append(words)
    return found


def kpc_command_exists(words: list[str]) -> bool:
    """``kpc WORDS --help`` succeeds, with WORDS the leading sub-command names."""
    names = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w)]
    result = CliRunner().invoke(app, [*names, "--help"])
    return result.exit_code == 0


def test_try_it_commands_name_programs_in_the_checkout() -> None:
    found = commands(section("Try it"))
    programs = {words[0] for words in found if "/" in words[0] and not words[0].startswith("$")}
    assert {"scripts/lab-demo", "scripts/test", ".venv/bin/kpc"} <= programs, found
    for words in found:
        assert words[0] != "kpc" or len(words) == 1, (
            f"'kpc' is not on a fresh machine's PATH: {shlex.join(words)}"
        )
    for program in programs - {".venv/bin/kpc"}:  # .venv is made by the scripts
        assert (REPO / program).is_file(), program


def test_every_kpc_command_in_the_readme_exists() -> None:
    named = [w for w in commands(README) if w[0] in {"kpc", ".venv/bin/kpc"} and len(w) > 1]
    assert len(named) >= 15, named
    missing = [shlex.join(w) for w in named if not kpc_command_exists(w)]
    assert not missing, missing


def test_demo_hints_are_absolute_and_exist() -> None:
    assert 'kpc="$PWD/.venv/bin/kpc"' in DEMO
    hints = [
        shlex.split(line.split('"', 2)[1], comments=True)
        for line in DEMO.splitlines()
        if line.lstrip().startswith('echo "  $kpc ')
    ]
    assert len(hints) >= 6, hints
    missing = [shlex.join(w) for w in hints if not kpc_command_exists(w)]
    assert not missing, missing


def test_license_is_an_spdx_string() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
