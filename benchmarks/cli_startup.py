"""How long `rsgeo --help` and `rsgeo --version` take (goal: < 0.5 s each).

Runs each command N times in fresh processes and prints the median and worst wall time.

    python benchmarks/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    for argv in (["--version"], ["--help"], ["evaluate", "--help"]):
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rsgeo", *argv], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        print(f"rsgeo {' '.join(argv):<18} median {statistics.median(times) * 1000:6.0f} ms, "
              f"worst {max(times) * 1000:6.0f} ms ({args.runs} runs)")


if __name__ == "__main__":
    main()
