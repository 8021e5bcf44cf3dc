"""Answer a prompt about an image with a multimodal model, or continue a text with a language model.

    qmamba generate --model runs/micro/model --image scene.png --prompt "What colour is the circle?"
    qmamba generate --model runs/micro/model --image scene.png --prompt "What colour is the circle?" --short-answer
    qmamba generate --model path/to/mamba-lm --tokenizer path/to/tokenizer --prompt "The capital of France"

Tokens are printed as they are generated. Models trained on LLaVA-1.5's data answer in a word or a phrase when
the question ends with "Answer the question using a single word or phrase." (as the VQAv2, GQA, VizWiz and TextVQA
evaluations ask); --short-answer appends it. Without it they tend to describe the image.
A prompt longer than the model was trained on (its run's max_length) is answered with a warning.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("qmamba")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a multimodal or language-model directory")
    p.add_argument("--prompt", required=True, help="the user message (or the text to continue, for an LM)")
    p.add_argument("--image", help="an image file (multimodal models)")
    p.add_argument("--short-answer", action="store_true",
                   help="append LLaVA-1.5's \"Answer the question using a single word or phrase.\" to the prompt")
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
    from qmamba.errors import InputError
    from qmamba.models.checkpoints import require_dir
    from qmamba.utils.device import resolve_device

    if not args.prompt.strip():
        raise InputError('--prompt is empty: give a question or a text to continue, e.g. --prompt "What is in the '
                         'image?"')
    resolve_device(args.device)  # a device that does not exist fails here, before a model is loaded
    if args.short_answer:
        from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX

        args.prompt = args.prompt.rstrip() + SHORT_ANSWER_SUFFIX
    path = require_dir(args.model, "model")
    if _family(path) == "multimodal":
        return _multimodal(args, path)
    if args.image:
        raise InputError(f"{path} is a Mamba language model, without a vision encoder: drop --image, or pass a "
                         f"multimodal model directory")
    return _language_model(args, path, Path(args.tokenizer or path))


def _family(path: Path) -> str:
    """'multimodal' or 'language model'; a config of any other family raises, naming it."""
    from qmamba.errors import CheckpointError
    from qmamba.models.hf_convert import lm_format
    from qmamba.models.multimodal import MODEL_TYPE
    from qmamba.utils.config import read_json

    raw = read_json(path / "config.json", "model config")
    if raw.get("model_type") == MODEL_TYPE:
        return "multimodal"
    if lm_format(raw) != "unknown":
        return "language model"
    family = raw.get("model_type") or raw.get("architectures") or "no model_type"
    raise CheckpointError(f"{path / 'config.json'} is a {family!r} model, which qmamba does not run: qmamba "
                          f"generates with its multimodal models (model_type {MODEL_TYPE!r}) and Mamba language "
                          f"models (mamba_ssm configs, or transformers model_type 'mamba' / 'mamba2')")


def trained_length(path: Path) -> tuple[int, str] | None:
    """(the longest sequence the model was trained on, where that figure comes from), or None if unknown: the
    ``max_length`` of the stage that exported ``path`` in its run's config.yaml (``RUN/<i>-<stage>/model``),
    else the tokenizer's ``model_max_length``."""
    import json
    import re

    import yaml

    stage = re.fullmatch(r"(\d+)-.+", path.resolve().parent.name)
    run_config = path.resolve().parent.parent / "config.yaml"
    if stage and run_config.is_file():
        stages = (yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}).get("stages") or []
        i = int(stage[1])
        if i < len(stages) and isinstance(stages[i].get("max_length"), int):
            return stages[i]["max_length"], f"{run_config}: stages[{i}].max_length"
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        length = json.loads(tok_config.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(length, int) and 0 < length < 10**7:
            return length, f"{tok_config.name}: model_max_length"
    return None


def warn_if_long(path: Path, n_tokens: int, what: str) -> None:
    """Log a warning when a prompt of ``n_tokens`` is longer than the model was trained on."""
    trained = trained_length(path)
    if trained is not None and n_tokens > trained[0]:
        log.warning("the prompt is %d tokens (%s), longer than the %d the model was trained on (%s): the answer "
                    "may not follow it", n_tokens, what, trained[0], trained[1])


def _multimodal(args, path) -> int:
    from qmamba.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(path, device=args.device, dtype=args.dtype)
    if args.tokenizer:
        from qmamba.data.tokenizer import load_tokenizer

        pipe.processor.tokenizer = load_tokenizer(args.tokenizer)
    ids = pipe.processor.prompt_ids(args.prompt, has_image=args.image is not None)
    warn_if_long(path, len(ids), "the image counted as one, as training's max_length counts it")
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
    warn_if_long(path, ids.shape[1], "text only")
    steps = stream(model, ids, eos_token_id=tok.eos_token_id, **_gen_kwargs(args))
    sys.stdout.write(args.prompt)
    for piece in stream_text(steps, tok):
        print(piece, end="", flush=True)
    print()
    return 0
