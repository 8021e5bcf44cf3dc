"""Benchmark qmamba against mamba_ssm and transformers: LM decode/prefill/training, VQA latency and throughput.

    qmamba bench --out bench.json                          # everything, on the GPU (bf16, random weights)
    qmamba bench --only lm-mamba1 --repeats 20             # one section
    qmamba bench --quick --out /tmp/smoke.json             # 4-layer models: a smoke test of every section
    qmamba bench --device cpu --quick                      # toy shapes on CPU (no peers)
    qmamba bench --only vqa,vqa-train --presets all --train-presets all   # every full-size system

Logs each figure as it comes (stderr), then prints markdown tables (device, figures, ratios to mamba_ssm where
it ran); --out writes JSON.
Sections: lm-mamba1, lm-mamba2, vqa (default) and vqa-train (one multimodal training step, on request).
"""

from __future__ import annotations

import argparse


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", type=_names, default=None,
                   help="comma-separated sections: lm-mamba1, lm-mamba2, vqa, vqa-train (default: the first three)")
    p.add_argument("--out", default=None, help="write the results here as JSON")
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: the GPU if there is one)")
    p.add_argument("--quick", action="store_true", help="4-layer models and few repeats: a smoke test")
    p.add_argument("--tiny", action=argparse.BooleanOptionalAction, default=None,
                   help="toy shapes (default: on CPU only)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per figure (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each figure")
    p.add_argument("--decode-tokens", type=int, default=64, help="new tokens per decode measurement")
    p.add_argument("--batch-decode", type=int, default=16, help="the larger decode batch")
    p.add_argument("--prompt-len", type=int, default=800, help="prefill length")
    p.add_argument("--train-len", type=int, default=800, help="training sequence length")
    p.add_argument("--train-batch", type=int, default=1, help="training batch")
    p.add_argument("--ref", action="store_true", help="also time qmamba on the pure-PyTorch reference ops (slow)")
    p.add_argument("--peers", type=_names, default=("mamba_ssm", "transformers"),
                   help="comma-separated peers, each used when importable: mamba_ssm, transformers ('' for none)")
    p.add_argument("--transformers-train", action="store_true", help="also time transformers' training (slow)")
    p.add_argument("--presets", type=_names, default=("qmamba-128", "cobra"),
                   help="comma-separated full-size presets of the vqa section, or all (default: qmamba-128,cobra)")
    p.add_argument("--vqa-batch", type=int, default=64, help="batch of the VQA throughput figure")
    p.add_argument("--question-len", type=int, default=40, help="question tokens of a VQA prompt")
    p.add_argument("--answer-tokens", type=int, default=5, help="answer tokens of a VQA prompt")
    p.add_argument("--train-presets", "--train-preset", type=_names, default=("qmamba-256",),
                   help="comma-separated presets of the vqa-train section, or all (default: qmamba-256)")
    p.add_argument("--local-attention", default="naive", choices=("naive", "absorbed", "fused"),
                   help="the query connectors' local cross-attention: naive (the dense mask, default), absorbed "
                        "or fused (ops.local_attention)")


def run(args: argparse.Namespace) -> int:
    import logging

    from qmamba.bench import BenchOptions, run_bench
    from qmamba.bench.options import DEFAULT_SECTIONS
    from qmamba.bench.report import render, write_json

    opts = BenchOptions(
        sections=args.only or DEFAULT_SECTIONS, device=args.device, quick=args.quick, tiny=args.tiny,
        repeats=args.repeats, warmup=args.warmup, decode_tokens=args.decode_tokens, batch_decode=args.batch_decode,
        prompt_len=args.prompt_len, train_len=args.train_len, train_batch=args.train_batch, ref_backend=args.ref,
        peers=args.peers, transformers_train=args.transformers_train, presets=args.presets,
        vqa_batch=args.vqa_batch, question_len=args.question_len, answer_tokens=args.answer_tokens,
        train_presets=args.train_presets, local_attention=args.local_attention)
    checkpoint = (lambda partial: write_json(partial, args.out)) if args.out else None
    # figures are logged and the JSON grows as they come: a killed run keeps them
    results = run_bench(opts, log=logging.getLogger("qmamba").info, checkpoint=checkpoint)
    if args.out:
        write_json(results, args.out)
    print()
    print(render(results))
    if results["errors"]:
        print("\nerrors:\n" + "\n".join(f"  {e}" for e in results["errors"]))
    peers = ("mamba_ssm", "transformers")
    own = [e for e in results["errors"] if not any(f" {p}:" in e for p in peers)]
    return 1 if own else 0  # a peer's failure is reported, not fatal
