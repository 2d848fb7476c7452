"""Write the settings table (bridge.settings_table) into README.md between its markers.

``python tools/gen_settings_table.py`` rewrites it; ``--check`` fails (exit 1) when README.md differs,
which ``nox -s lint`` runs so the README cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.settings_table import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings:start (tools/gen_settings_table.py) -->\n", "<!-- settings:end -->\n"


def rendered(text: str) -> str:
    head, found_start, rest = text.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found_start and found_end):
        raise SystemExit(f"{README} has no settings markers ({START.strip()} … {END.strip()})")
    return head + START + markdown_table() + END + tail


def main() -> int:
    current = README.read_text()
    wanted = rendered(current)
    if "--check" in sys.argv[1:]:
        if current != wanted:
            print(
                "README.md's settings table is stale: run python tools/gen_settings_table.py", file=sys.stderr
            )
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
