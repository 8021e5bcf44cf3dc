"""Build the micro-world's pretrained backbones (tokenizer, SigLIP, Mamba LM) with qmamba's own scripts.

    qmamba micro build --out src/qmamba/assets/micro                    # about 12 minutes on 2 CPU cores
    qmamba micro build --out /tmp/micro --lm-steps 5000 --vision-steps 3000 --device cuda

Generates a synth world (or uses --world), trains a byte-level BPE tokenizer on its training text, a
SigLIP encoder with the sigmoid image-text loss and a Mamba LM, and writes OUT/siglip (transformers
SiglipModel), OUT/mamba (mamba_ssm format), OUT/build.json and OUT/README.md (under 20 MB in all).
"""

from __future__ import annotations

import argparse
import dataclasses


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build"], help="build: train the backbones and write them to --out")
    p.add_argument("--out", required=True, help="output folder (siglip/, mamba/, build.json, README.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the data order and the inits")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    p.add_argument("--lm-steps", type=int, default=900, help="optimizer steps of the Mamba LM (8 x 256 tokens)")
    p.add_argument("--lm-batch-size", type=int, default=8, help="LM rows of 256 tokens per optimizer step")
    p.add_argument("--sft-steps", type=int, default=0,
                   help="LM instruction-tuning steps after pretraining (32 conversations, loss on the replies)")
    p.add_argument("--choice-sft-steps", type=int, default=0,
                   help="then this many more tuning steps that add MMBench-style multiple-choice drills "
                        "(grounded, existence and choice conversations; the shipped LM: 600)")
    p.add_argument("--choice-drills", action="store_true",
                   help="pretrain and instruction-tune on the multiple-choice drills from the start instead "
                        "(costs the existence skill; kept to reproduce that comparison)")
    p.add_argument("--vision-steps", type=int, default=600, help="optimizer steps of SigLIP (64 pairs)")
    p.add_argument("--world-size", type=int, default=4000, help="align and finetune images of the generated world")
    p.add_argument("--world", default=None, help="a synth world to pretrain on (generated there if absent)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier build in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json

    from qmamba.micro.build import build_micro_assets
    from qmamba.micro.corpus import KINDS
    from qmamba.micro.loop import pick_device
    from qmamba.micro.pretrain_lm import LMTrainConfig

    # on a GPU a whole batch fits one pass; on a CPU rows of 4 keep a pass inside the caches
    micro = 0 if pick_device(args.device).type == "cuda" or args.lm_batch_size % 4 else 4
    lm_config = LMTrainConfig(steps=args.lm_steps, batch_size=args.lm_batch_size, micro_batch_size=micro,
                              sft_steps=args.sft_steps, choice_sft_steps=args.choice_sft_steps, seed=args.seed)
    if args.choice_drills:
        lm_config = dataclasses.replace(lm_config, kinds=KINDS, sft_kinds=("grounded", "exist", "choice"))
    record = build_micro_assets(args.out, seed=args.seed, device=args.device, world_size=args.world_size,
                                lm_steps=args.lm_steps, vision_steps=args.vision_steps, world_dir=args.world,
                                show_progress=not args.quiet, overwrite=args.overwrite, lm_config=lm_config)
    lm, vision = record["lm"], record["vision"]
    summary = {"out": args.out, "minutes": round(record["seconds"]["total"] / 60, 2),
               "lm_heldout_loss": round(lm["heldout_loss"], 4),
               "lm_grounded_answer_accuracy": lm["answer_accuracy_grounded"],
               "lm_existence_answer_accuracy": lm.get("answer_accuracy_exist"),
               "lm_choice_answer_accuracy": lm.get("answer_accuracy_choice"),
               "siglip_retrieval_top1": vision["retrieval_top1"], "siglip_retrieval_chance": vision["retrieval_chance"],
               "megabytes": round(record["total_bytes"] / 1e6, 2)}
    print(json.dumps(summary, indent=2))
    return 0
