"""Train and score several micro-world configurations (quickstart settings) and print one table.

    python benchmarks/micro_sweep.py '{"base": {}, "lr": {"finetune_lr": 1.5e-3}}' --out /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qmamba.quickstart import TASKS, QuickstartConfig, run_quickstart


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", help="JSON {name: {QuickstartConfig field: value}}")
    p.add_argument("--out", default="/tmp/sweep")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = []
    for name, overrides in json.loads(a.configs).items():
        t = time.perf_counter()
        result = run_quickstart(QuickstartConfig(out=str(Path(a.out) / name), **overrides))
        scores = {k: result["scores"][k] for k in TASKS}
        pope = scores["pope"]["metrics"]
        rows.append({"name": name, "overrides": overrides, "train_s": result["timings"]["train_s"],
                     "total_s": time.perf_counter() - t, "chance": result["chance"],
                     "main": {k: v["main"] for k, v in scores.items()},
                     "pope_acc": pope["accuracy_mean_of_splits"],
                     "pope_f1_splits": {s: m["f1"] for s, m in pope["per_split"].items()}})
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print("\n| config | train s | " + " | ".join(TASKS) + " | POPE acc |")
    print("| --- | ---: | " + " | ".join("---:" for _ in TASKS) + " | ---: |")
    for r in rows:
        cells = [("n/a" if r["main"][k] is None else f"{r['main'][k]:.1f}") for k in TASKS]
        print(f"| {r['name']} | {r['train_s']:.0f} | " + " | ".join(cells) + f" | {r['pope_acc']:.1f} |")


if __name__ == "__main__":
    main()
