"""Convert a peer's released run (Cobra, ML-Mamba) and its timm vision towers to a qmamba model directory.

    qmamba convert cobra --run-dir RUN --dinov2 DINO --siglip SIGLIP --llm-tokenizer TOK --out OUT

RUN is the peer's run directory (config.json, checkpoints/latest-checkpoint.pt); DINO and SIGLIP are the timm
weights of vit_large_patch14_reg4_dinov2.lvd142m and vit_so400m_patch14_siglip_384 (a file, or a directory with
model.safetensors, pytorch_model.bin or open_clip_pytorch_model.bin); TOK is the LM's tokenizer directory. The
checkpoint is read with weights_only=True: a pickle that needs code to load is refused, and nothing in it runs.
OUT then loads with MultimodalModel.from_pretrained and runs with qmamba generate / eval / bench.
"""

from __future__ import annotations

import argparse

PEERS = {"cobra": "Cobra (cobra+3b and its variants)", "mlmamba": "ML-Mamba"}
DTYPES = ("fp32", "bf16", "fp16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("peer", choices=list(PEERS), help="whose run: " + ", ".join(f"{k} = {v}" for k, v in PEERS.items()))
    p.add_argument("--run-dir", required=True, help="the peer's run directory (config.json, checkpoints/)")
    p.add_argument("--dinov2", required=True, help="timm DINOv2 ViT-L/14 reg4 weights (file or directory)")
    p.add_argument("--siglip", required=True, help="timm / open_clip SigLIP so400m/14 384 weights (file or directory)")
    p.add_argument("--llm-tokenizer", required=True, help="the LM's tokenizer directory (GPT-NeoX, as the peer used)")
    p.add_argument("--out", required=True, help="the model directory to write")
    p.add_argument("--dtype", choices=DTYPES, default="bf16", help="weights' dtype in memory and on disk")
    p.add_argument("--preset", help="the qmamba preset the run fits (default: the peer's name; tiny-* for tests)")


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from qmamba.convert import convert_cobra, convert_mlmamba

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    convert = convert_cobra if args.peer == "cobra" else convert_mlmamba
    model = convert(args.run_dir, args.dinov2, args.siglip, args.llm_tokenizer, args.out,
                    preset=args.preset or args.peer, dtype=dtype)
    logging.getLogger("qmamba").info("converted %s: %s visual tokens, chat template %s -> %s", PEERS[args.peer],
                                     model.num_visual_tokens, model.config.chat_template, args.out)
    print(args.out)
    return 0
