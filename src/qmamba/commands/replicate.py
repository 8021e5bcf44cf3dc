"""Run the Q-Mamba paper's experiments on the micro-world with several seeds and write a report.

    qmamba replicate --tier tiny --out runs/replicate                      # everything, 3 seeds
    qmamba replicate --tier tiny --out runs/rep --experiments table2,table3 --seeds 2
    qmamba replicate --tier tiny --out runs/rep --experiments table1 --presets cobra,qmamba-256
    qmamba replicate --tier tiny --out runs/rep --bench-json bench.json     # latency beside Table 1
    qmamba replicate --tier tiny --list                                     # the cells, nothing run

Experiments: table1 (every connector; Q-Mamba at the paper's 128/256/512/729-of-729 query proportions),
table2 (local vs global mask), table3 (preprocessing from trained VL-Mamba / scratch / none), table4 (scan
order at inference), queries (query-count sweep). Each (experiment, variant, seed) trains align + finetune and
scores the six micro-benchmarks. Writes <out>/report.md, report.json and plots/*.png: per cell the mean and 95%
confidence interval over seeds, the paper's numbers beside ours, and each finding's status. Run the same
command again to resume: finished runs are skipped, an interrupted one continues from its checkpoints.
"""

from __future__ import annotations

import argparse


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tier", default="tiny", help="tiny (shipped micro backbones; CPU or GPU) or small (GPU)")
    p.add_argument("--out", default="runs/replicate", help="replication directory (default runs/replicate)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    p.add_argument("--experiments", type=_names, default=None,
                   help="comma-separated: table1,table2,table3,table4,queries (default: all)")
    p.add_argument("--presets", type=_names, default=None,
                   help="comma-separated variants to run (e.g. cobra,qmamba-256; see --list; default: all)")
    p.add_argument("--bench-json", default=None, help="`qmamba bench --out` JSON: time per answer beside Table 1")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the GPU if there is one)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each shard in its own process (one GPU holds several small-tier runs)")
    p.add_argument("--list", action="store_true", help="print the selected cells and exit")
    g = p.add_argument_group("tier overrides (quick looks; the report states the tier's name only)")
    g.add_argument("--n-align", type=int, default=None, help="align-stage images")
    g.add_argument("--n-finetune", type=int, default=None, help="finetune-stage images")
    g.add_argument("--n-eval", type=int, default=None, help="images per evaluation set")
    g.add_argument("--max-steps", type=int, default=None, help="optimizer steps per stage at most")
    g.add_argument("--batch-size", type=int, default=None, help="training batch")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from qmamba.replicate import ReplicateOptions, build_registry, replicate
    from qmamba.replicate.registry import select
    from qmamba.replicate.tiers import get_tier

    tier = get_tier(args.tier)
    changes = {k: getattr(args, k) for k in ("n_align", "n_finetune", "n_eval", "max_steps", "batch_size")
               if getattr(args, k) is not None}
    tier = dataclasses.replace(tier, **changes)
    if args.list:
        for c in select(build_registry(tier), args.experiments, args.presets):
            print(f"{c.experiment:<8} {c.variant:<22} {c.visual_tokens:>4} tokens  train {c.train.key:<30} "
                  f"{c.label}")
        return 0
    report = replicate(ReplicateOptions(out=args.out, tier=tier, seeds=args.seeds, experiments=args.experiments,
                                        presets=args.presets, bench_json=args.bench_json, device=args.device,
                                        jobs=args.jobs))
    print(f"ran {len(report['ran'])} run(s); report: {args.out}/report.md")
    for f in report["findings"]:
        print(f"  {f['status']:<15} {f['claim']}")
    return 0
