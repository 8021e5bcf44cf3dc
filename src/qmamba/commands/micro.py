"""Build the micro-world's pretrained backbones (tokenizer, SigLIP, Mamba LM) with qmamba's own scripts.

    qmamba micro build --out src/qmamba/assets/micro                    # tiny, about 12 minutes on 2 CPU cores
    qmamba micro build --out /tmp/micro --lm-steps 5000 --vision-steps 3000 --device cuda
    qmamba micro build --size small --device cuda                       # into ~/.cache/qmamba/micro-small

Generates a synth world (or uses --world), trains a byte-level BPE tokenizer on its training text, a
SigLIP encoder with the sigmoid image-text loss and a Mamba LM, and writes OUT/siglip (transformers
SiglipModel), OUT/mamba (mamba_ssm format), OUT/build.json and OUT/README.md (tiny: under 20 MB in all).
``--size small`` (a GPU tier: 128 px encoder, 28M-parameter LM, a harder world) builds into
``$QMAMBA_CACHE/micro-small`` (default ``~/.cache/qmamba``) unless --out is given, and prints its gates.
"""

from __future__ import annotations

import argparse
import dataclasses

# the tiny build's settings when a flag is not given (a sized build keeps its own unless a flag is given)
TINY = {"lm_steps": 900, "lm_batch_size": 8, "sft_steps": 0, "choice_sft_steps": 0, "vision_steps": 600,
        "world_size": 4000}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build"], help="build: train the backbones and write them to --out")
    p.add_argument("--size", choices=["tiny", "small"], default="tiny",
                   help="tiny: the shipped CPU backbones (needs --out); small: the GPU tier, built into "
                        "~/.cache/qmamba/micro-small ($QMAMBA_CACHE) unless --out, with its gates printed")
    p.add_argument("--out", default=None, help="output folder (siglip/, mamba/, build.json, README.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the data order and the inits")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    p.add_argument("--lm-steps", type=int, default=None, help="optimizer steps of the Mamba LM (tiny: 900 of "
                                                              "8 x 256 tokens)")
    p.add_argument("--lm-batch-size", type=int, default=None, help="LM rows per optimizer step (tiny: 8)")
    p.add_argument("--sft-steps", type=int, default=None,
                   help="LM instruction-tuning steps after pretraining (tiny: 0; loss on the replies only)")
    p.add_argument("--choice-sft-steps", type=int, default=None,
                   help="then this many more tuning steps that add MMBench-style multiple-choice drills "
                        "(grounded, existence and choice conversations; the shipped LM: 600)")
    p.add_argument("--choice-drills", action="store_true",
                   help="pretrain and instruction-tune on the multiple-choice drills from the start instead "
                        "(costs the existence skill; kept to reproduce that comparison)")
    p.add_argument("--vision-steps", type=int, default=None, help="optimizer steps of SigLIP (tiny: 600 of 64 pairs)")
    p.add_argument("--world-size", type=int, default=None, help="align and finetune images of the generated world "
                                                                "(tiny: 4000)")
    p.add_argument("--world", default=None, help="a synth world to pretrain on (generated there if absent)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier build in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.size != "tiny":
        return _run_sized(args)
    if args.out is None:
        from qmamba.errors import ConfigError

        raise ConfigError("qmamba micro build --size tiny needs --out (e.g. src/qmamba/assets/micro)")
    for name, value in TINY.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return _run_tiny(args)


def _run_tiny(args: argparse.Namespace) -> int:
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
    print(json.dumps(_summary(args.out, record), indent=2))
    return 0


def _summary(out, record: dict) -> dict:
    lm, vision = record["lm"], record["vision"]
    return {"out": str(out), "minutes": round(record["seconds"]["total"] / 60, 2),
            "lm_heldout_loss": round(lm["heldout_loss"], 4),
            "lm_grounded_answer_accuracy": lm["answer_accuracy_grounded"],
            "lm_existence_answer_accuracy": lm.get("answer_accuracy_exist"),
            "lm_choice_answer_accuracy": lm.get("answer_accuracy_choice"),
            "siglip_retrieval_top1": vision["retrieval_top1"], "siglip_retrieval_chance": vision["retrieval_chance"],
            "megabytes": round(record["total_bytes"] / 1e6, 2)}


def sized(name: str, args: argparse.Namespace):
    """The ``MicroSize`` ``name`` with the flags that were given applied over its own settings."""
    from qmamba.micro.sizes import get_size

    size = get_size(name)
    lm = {k: v for k, v in {"steps": args.lm_steps, "batch_size": args.lm_batch_size, "sft_steps": args.sft_steps,
                            "choice_sft_steps": args.choice_sft_steps}.items() if v is not None}
    vision = {} if args.vision_steps is None else {"steps": args.vision_steps}
    return dataclasses.replace(size, lm_train={**size.lm_train, **lm}, vision_train={**size.vision_train, **vision},
                               world_size=args.world_size or size.world_size)


def _run_sized(args: argparse.Namespace) -> int:
    import json

    from qmamba.micro.build import build_micro_assets
    from qmamba.micro.gates import gate_lines
    from qmamba.micro.sizes import cache_dir

    out = args.out or cache_dir(args.size)
    print(f"building the {args.size} micro backbones into {out}")
    record = build_micro_assets(out, seed=args.seed, device=args.device, world_dir=args.world,
                                show_progress=not args.quiet, overwrite=args.overwrite, size=sized(args.size, args))
    print(json.dumps(_summary(out, record), indent=2))
    gates = record.get("gates")
    for line in gate_lines(gates) if gates else []:
        print(line)
    if gates and not gates["all_passed"]:
        print(f"some gates FAILED; the backbones are kept in {out} (build.json records every figure)")
        return 2
    return 0
