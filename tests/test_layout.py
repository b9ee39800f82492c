"""The package's ground floor imports nothing of the rooms built on it: model, config, ids,
context, texts, formatting, codec and telemetry stand alone, and only threadchat/commands/
(the entry points) wires bot/, workflows/, activities/ and devtools/ together."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "threadchat"
UPPER = {"bot", "workflows", "activities", "devtools"}


def imported(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            if node.module == "threadchat":
                modules |= {f"threadchat.{alias.name}" for alias in node.names}
    return modules


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_lower_modules_import_nothing_above_them(path):
    above = {
        m for m in imported(path) if m.split(".")[0] in UPPER or m.startswith("threadchat.commands")
    }
    assert not above, f"{path.name} imports {sorted(above)}"


def test_the_entry_points_are_where_the_console_script_says():
    assert (PACKAGE / "commands" / "cli.py").exists()
    assert (
        'threadchat = "threadchat.commands.cli:main"'
        in (PACKAGE.parent / "pyproject.toml").read_text()
    )
