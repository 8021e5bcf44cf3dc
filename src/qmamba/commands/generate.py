"""Answer a prompt about an image with a multimodal model, or continue a text with a language model.

    qmamba generate --model runs/micro/model --image scene.png --prompt "What colour is the circle?"
    qmamba generate --model path/to/mamba-lm --tokenizer path/to/tokenizer --prompt "The capital of France"

Tokens are printed as they are generated.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a multimodal or language-model directory")
    p.add_argument("--prompt", required=True, help="the user message (or the text to continue, for an LM)")
    p.add_argument("--image", help="an image file (multimodal models)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; used with --sample")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: bf16 on GPU, fp32 on CPU)")


def _gen_kwargs(args) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "do_sample": args.sample, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
            "seed": args.seed}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qmamba.models.checkpoints import require_dir
    from qmamba.models.multimodal import MODEL_TYPE
    from qmamba.utils.config import read_json

    path = require_dir(args.model, "model")
    if read_json(path / "config.json", "model config").get("model_type") == MODEL_TYPE:
        return _multimodal(args, path)
    if args.image:
        from qmamba.errors import InputError

        raise InputError(f"{path} is a language model without a vision encoder; drop --image")
    return _language_model(args, path, Path(args.tokenizer or path))


def _multimodal(args, path) -> int:
    from qmamba.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(path, device=args.device, dtype=args.dtype)
    if args.tokenizer:
        from qmamba.data.tokenizer import load_tokenizer

        pipe.processor.tokenizer = load_tokenizer(args.tokenizer)
    for piece in pipe.stream(args.prompt, image=args.image, **_gen_kwargs(args)):
        print(piece, end="", flush=True)
    print()
    return 0


def _language_model(args, path, tokenizer_dir) -> int:
    import torch

    from qmamba.data.tokenizer import load_tokenizer
    from qmamba.infer.generate import stream, stream_text
    from qmamba.models.mamba_lm import MambaLM
    from qmamba.utils.device import resolve_device, resolve_dtype

    tok = load_tokenizer(tokenizer_dir)
    device = resolve_device(args.device)
    model = MambaLM.from_pretrained(path, dtype=resolve_dtype(args.dtype, device), device=device)
    ids = torch.tensor([tok.encode(args.prompt)], device=device)
    steps = stream(model, ids, eos_token_id=tok.eos_token_id, **_gen_kwargs(args))
    sys.stdout.write(args.prompt)
    for piece in stream_text(steps, tok):
        print(piece, end="", flush=True)
    print()
    return 0
