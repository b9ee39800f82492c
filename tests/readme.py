"""The README's configuration table, for tests that hold other files to it."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def documented_settings() -> dict[str, set[str]]:
    """Each variable of the configuration table, with the commands the table says use it."""
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        users = {word.strip(" `,") for word in cells[2].split()}
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            found[name] = users
    return found
