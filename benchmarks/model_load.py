"""Load time and peak memory of the shipped model alias against its base, in fresh processes.

Each measurement is a new Python process that imports grit_components, calls `load_model(alias)` once
(after the first conversion/merge, which happens before the timed rounds) and reports the wall time of
that call and the process's peak RSS. Rounds alternate between the two aliases.

    python benchmarks/model_load.py                      # grit-smollm2-135m vs smollm2-135m-instruct, 5 rounds

Writes benchmarks/results/model_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, time
t0 = time.perf_counter()
from grit_components import load_model
imported = time.perf_counter()
model = load_model({alias!r})
loaded = time.perf_counter()
print(json.dumps({{"import_seconds": imported - t0, "load_seconds": loaded - imported,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "fingerprint": model.fingerprint}}))
"""


def measure(alias: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(alias=alias)], capture_output=True, text=True,
                         cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="grit-smollm2-135m")
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "model_load.json")
    args = parser.parse_args()
    for alias in (args.base, args.model):  # first conversion / merge: not timed
        measure(alias)
    runs: dict[str, list[dict]] = {args.base: [], args.model: []}
    for _ in range(args.rounds):
        for alias in runs:
            runs[alias].append(measure(alias))
    summary = {alias: {"load_seconds_median": statistics.median(r["load_seconds"] for r in rows),
                       "peak_rss_mib_median": statistics.median(r["peak_rss_mib"] for r in rows)}
               for alias, rows in runs.items()}
    base, model = summary[args.base], summary[args.model]
    result = {"rounds": args.rounds, "summary": summary, "runs": runs,
              "load_seconds_over_base": model["load_seconds_median"] - base["load_seconds_median"],
              "peak_rss_ratio": model["peak_rss_mib_median"] / base["peak_rss_mib_median"]}
    for alias, row in summary.items():
        print(f"{alias:24s} load {row['load_seconds_median']:.2f}s  peak RSS {row['peak_rss_mib_median']:.0f} MiB")
    print(f"over the base: +{result['load_seconds_over_base']:.2f}s load, RSS x{result['peak_rss_ratio']:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
