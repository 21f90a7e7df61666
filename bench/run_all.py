"""Run every benchmark in turn (``make bench``); each prints its own figures.

Pass ``--quick`` for a short smoke run of all of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    steps = [
        ["bench_check.py"],
        ["bench_scheduler.py"] + (["--quick"] if quick else []),
        ["bench_api.py"] + (["--seconds", "1"] if quick else []),
    ]
    failed = 0
    for step in steps:
        print(f"\n=== {step[0]} {' '.join(step[1:])} ===", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / step[0]), *step[1:]], cwd=HERE.parent)
        if rc != 0:
            print(f"{step[0]} exited with status {rc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
