"""Train a multimodal model stage by stage (align, then finetune) from a YAML run config.

    qmamba train --config configs/tiny-cpu.yaml
    qmamba train --config configs/qmamba-256.yaml stages.1.lr=1e-5 run.output_dir=runs/q256
    torchrun --nproc_per_node=4 -m qmamba train --config configs/qmamba-256.yaml

Overrides are dotted paths into the config (list items by index). Run the same command again to
resume an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a run config (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from qmamba.train.config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from qmamba.train.runner import main_train

    model_dir = main_train(cfg)
    print(f"model: {model_dir}")
    return 0
