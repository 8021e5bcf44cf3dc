"""Serve a multimodal model behind OpenAI's chat-completions API, with continuous batching.

    qmamba serve --model runs/qmamba-micro/model                         # http://127.0.0.1:8000
    qmamba serve --model DIR --host 0.0.0.0 --port 9000 --num-slots 16
    qmamba serve --model DIR --allow-local-files ./images --allow-remote-images

Routes: POST /v1/chat/completions (streamed with "stream": true), GET /v1/models, /health, /metrics, and the
chat page at /. Images come as data: URLs; local paths only under --allow-local-files, remote http(s) URLs only
with --allow-remote-images (public addresses only, within --max-image-bytes and a time and redirect limit).
Needs the serve extra: pip install "qmamba[serve]".
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a multimodal model directory")
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-slots", type=int, default=8, help="requests decoded together (the engine's state rows)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot; more are answered 429")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take, queue included")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--served-model-name", default=None, help="the model's name in the API (default: the directory's)")
    p.add_argument("--allow-local-files", metavar="DIR", default=None,
                   help="let image_url name files under DIR (paths or file:// URLs); off by default")
    p.add_argument("--allow-remote-images", action="store_true",
                   help="let image_url be an http(s) URL, fetched from public addresses only; off by default")
    p.add_argument("--max-image-bytes", type=int, default=20 << 20, help="the largest image, encoded (20 MiB)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="the longest prompt, an image counted as one token (default: the length the model was "
                        "trained on, else 4096)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="the most new tokens a request may ask for")
    p.add_argument("--max-prefill-batch", type=int, default=64,
                   help="waiting requests admitted together, in one prefill, at a decode step")
    p.add_argument("--max-prefill-tokens", type=int, default=16384,
                   help="bound on one admission prefill: rows x longest prompt (an image as its visual tokens); "
                        "it bounds how long running requests wait for their next token")
    p.add_argument("--admit-ratio", type=float, default=0.25,
                   help="while requests run, admit waiting ones only once this many times the running ones could "
                        "join (or --admit-wait-steps passed): fewer, larger admissions; 0 admits at every step")
    p.add_argument("--admit-wait-steps", type=int, default=8,
                   help="decode steps after an admission by which the next one happens, whatever --admit-ratio says")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="run the decode step eagerly on a GPU (default: one CUDA graph per batch bucket)")


def run(args: argparse.Namespace) -> int:
    from qmamba.commands.generate import trained_length
    from qmamba.errors import ConfigError
    from qmamba.models.checkpoints import require_dir
    from qmamba.utils.config import read_json
    from qmamba.utils.device import resolve_device

    try:
        from qmamba.serve.server import load_service
        from qmamba.serve.server import run as serve
    except ImportError as e:
        raise ConfigError(f'qmamba serve needs the serve extra ({e.name} is missing): pip install "qmamba[serve]"') \
            from None
    from qmamba.serve import ServeConfig

    resolve_device(args.device)  # a device that does not exist fails here, before a model is loaded
    path = require_dir(args.model, "model")
    if args.allow_local_files:
        require_dir(args.allow_local_files, "--allow-local-files")
    for name in ("num_slots", "max_image_bytes", "max_tokens_limit", "timeout", "max_prefill_batch",
                 "max_prefill_tokens"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("admit_ratio", "admit_wait_steps"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    trained = trained_length(path)
    generation = read_json(path / "generation_config.json", "generation config") \
        if (path / "generation_config.json").is_file() else {}
    config = ServeConfig(
        model=str(path), host=args.host, port=args.port, num_slots=args.num_slots, max_queue=args.max_queue,
        timeout=args.timeout, device=args.device, dtype=args.dtype, served_model_name=args.served_model_name,
        allow_local_files=args.allow_local_files, allow_remote_images=args.allow_remote_images,
        max_image_bytes=args.max_image_bytes, max_tokens_limit=args.max_tokens_limit,
        cuda_graphs=not args.no_cuda_graphs, max_prefill_batch=args.max_prefill_batch,
        max_prefill_tokens=args.max_prefill_tokens, admit_ratio=args.admit_ratio,
        admit_wait_steps=args.admit_wait_steps,
        max_prompt_tokens=args.max_prompt_tokens or (trained[0] if trained else 4096),
        default_max_tokens=min(int(generation.get("max_new_tokens") or 128), args.max_tokens_limit))
    serve(load_service(config))
    return 0
