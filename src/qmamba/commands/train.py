"""Train a multimodal model stage by stage (align, then finetune) from a YAML run config.

    qmamba train --config configs/tiny-cpu.yaml
    qmamba train --config configs/qmamba-256.yaml stages.1.lr=1e-5 run.output_dir=runs/q256
    torchrun --nproc_per_node=4 -m qmamba train --config configs/qmamba-256.yaml

Overrides are dotted paths into the config (list items by index). Run the same command again to
resume an interrupted run from its last checkpoint. --print-config shows the resolved config with every
default filled in.

Data: LLaVA conversation files, JSON (a list of records) or JSONL (one record per line), e.g.
    {"id": "33471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A bus."}]}
"image" is relative to the source's image_root and optional (text-only records); roles human/user and
gpt/assistant; at most one <image>, in a user turn. `qmamba data synth --out DIR` writes such files.

Config (YAML; examples in configs/: tiny-cpu.yaml for a CPU, qmamba-256.yaml, cobra.yaml, vlmamba-bsm.yaml):
  model:   preset (a name from qmamba info --list-presets); llm (a pretrained Mamba LM directory); vision (a
           vision encoder directory, or [dinov2, siglip]); init_from (a multimodal model to start from);
           tokenizer (default: init_from, else llm); connector (overrides of the preset's connector fields);
           mamba_init, preprocess_init (Q-Mamba: copy its Mamba layers / preprocess connector from a model)
  stages:  a list, run in order, each starting from the model the one before exported:
           name (align: the connector only, lr 1e-4, batch 256; finetune: connector and LLM, lr 2e-5, batch 128;
           full: everything); sources (a list of {path, image_root, weight, name}); epochs; lr;
           global_batch_size; micro_batch_size; warmup_ratio; optimizer (radam or adamw); weight_decay; betas;
           max_grad_norm; max_length (tokens, the image counted as one; the tail is cut); max_steps;
           group_by (modality_length, length or null: how batches group items); num_workers;
           max_bad_fraction (bad records are skipped up to this share, then the run stops)
  run:     output_dir; seed; precision (bf16 or fp32); activation_checkpointing; checkpoint_every_steps;
           checkpoint_every_minutes; keep_last; log_every; tensorboard; wandb; device
A run writes OUTPUT_DIR/config.yaml (the resolved config) and OUTPUT_DIR/<i>-<stage>/ (checkpoints,
metrics.jsonl, loss.png, and model/: the exported model for qmamba generate / eval).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a run config (YAML): see above and configs/")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. stages.0.lr=1e-3")
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
