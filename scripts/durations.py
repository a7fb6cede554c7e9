"""tests/unit/durations.json from a pytest --durations=0 log: seconds per test (setup, call
and teardown together), what `pytest --fast` reads to pick the quick tier."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def main(log: str, out: str) -> None:
    seconds: dict[str, float] = {}
    for line in Path(log).read_text().splitlines():
        m = re.match(r"([0-9.]+)s (?:call|setup|teardown)\s+(\S+)", line)
        if m:
            seconds[m.group(2)] = round(seconds.get(m.group(2), 0.0) + float(m.group(1)), 2)
    if not seconds:
        sys.exit(f"{log}: no durations (run pytest with --durations=0 --durations-min=0)")
    Path(out).write_text(json.dumps(dict(sorted(seconds.items())), indent=1) + "\n")
    print(f"{out}: {len(seconds)} tests, {sum(seconds.values()):.0f} s in all")


if __name__ == "__main__":
    main(*sys.argv[1:3])
