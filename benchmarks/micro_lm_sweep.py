"""The micro LM's recipe, swept: several language-model trainings of one size on one world, at once, each scored
on the LM gates of ``qmamba micro build`` (the scene given in words).

    python benchmarks/micro_lm_sweep.py --out runs/lm-sweep \\
        '{"base": {}, "sft5e-4": {"sft_lr": 5e-4, "sft_length_window": 0}, "long": {"sft_steps": 2000}}'
    python benchmarks/micro_lm_sweep.py --out runs/lm-sweep --report          # the table of what finished

A configuration is ``LMTrainConfig`` fields over the size's own (``MicroSize.lm_train``) and two optional keys:
``"lm"``, the LM's shape (``{"ssm_cfg": {"d_state": 64}}``), and ``"world"``, a world of other settings, drawn once
(``{"max_objects": 6}``). Each trains in its own process (``--jobs`` at once, sharing the GPU) by
``qmamba.micro.sweep`` and is scored on its world; the table gives its minutes, losses and the gates' LM figures
(grounded open questions, MMBench-like CircularEval, POPE-like accuracy per split, the weakest grounded question
types). Finished configurations are skipped, so a killed sweep resumes (a configuration cut mid-training starts
again); on a GPU machine run it in the background (``setsid nohup ... &``) and read the table later with
``--report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = ["config", "minutes", "SFT loss", "held-out LM loss", "grounded open", "CircularEval",
           "POPE rand / pop / adv", "exist", "choice", "weakest grounded types"]


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="?", default="{}",
                   help='JSON {name: {LMTrainConfig field: value, "lm": {shape}, "world": {settings}}}')
    p.add_argument("--out", required=True, help="the sweep's folder (world, tokenizer, one folder per configuration)")
    p.add_argument("--size", default="small", help="the micro size whose LM, world and recipe are swept")
    p.add_argument("--seed", type=int, default=0, help="the build's seed (the world's is seed + 1000)")
    p.add_argument("--jobs", type=int, default=4, help="trainings at once, each in its own process")
    p.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    p.add_argument("--report", action="store_true", help="print the table of the finished configurations only")
    args = p.parse_args(argv)
    try:
        args.configs = json.loads(args.configs)
    except json.JSONDecodeError as e:
        p.error(f"configs: not JSON ({e})")
    if not isinstance(args.configs, dict) or not all(isinstance(v, dict) for v in args.configs.values()):
        p.error('configs: give {"name": {"field": value, ...}, ...}')
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def row(r: dict) -> list[str]:
    lm, gates = r["lm"], r["gates"]
    pope = " / ".join(pct(gates["pope"][s]["accuracy"]) for s in ("random", "popular", "adversarial"))
    weakest = sorted((v["accuracy"], k) for k, v in gates["grounded_by_type"].items() if v["questions"] >= 5)[:3]
    return [f"{r['name']} `{json.dumps(r['overrides'])}`", f"{r['seconds'] / 60:.1f}", f"{lm['sft_loss']:.3f}",
            f"{lm['heldout_loss']:.2f}", pct(gates["figures"]["lm_grounded"]),
            pct(gates["figures"]["lm_mmbench_circular"]), pope, pct(lm.get("answer_accuracy_exist")),
            pct(lm.get("answer_accuracy_choice")), ", ".join(f"{k} {100 * a:.0f}" for a, k in weakest)]


def report(out: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    from qmamba.utils.log import setup_logging

    setup_logging()
    if not args.report:
        from qmamba.micro.sizes import get_size
        from qmamba.micro.sweep import sweep

        sweep(args.out, args.configs, get_size(args.size), args.seed, args.jobs, args.device)
    print(report(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
