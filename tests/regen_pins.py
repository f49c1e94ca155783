"""Regenerate tests/pins/*.json on purpose, after a change meant to move the numbers:

    python tests/regen_pins.py

computes every family's pins as tests/test_pins.py does (same code, same torch settings),
rewrites the files whose values moved beyond the tests' tolerance, and prints those values, so
the diff can be read before it is committed.
"""

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's stackgan, and the tests' modules

import conftest  # noqa: E402,F401  (the suite's torch settings)
from test_pins import FAMILIES, PIN_DIR, Workspace, differences  # noqa: E402


def main():
    PIN_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(tmp)
        for family in FAMILIES:
            path = PIN_DIR / f"{family}.json"
            new = workspace.pins(family)
            old = json.loads(path.read_text()) if path.exists() else None
            diffs = [] if old is None else differences(old, new)
            if old is None or diffs:  # moves within the tests' tolerance leave the file as it is
                path.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
            status = "new" if old is None else f"{len(diffs)} values changed" if diffs else "unchanged"
            print(f"{path.relative_to(HERE.parent)}: {status}")
            for line in diffs:
                print(f"  {line}")


if __name__ == "__main__":
    main()
