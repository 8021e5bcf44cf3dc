"""Where the GPU time of one LM prefill, training step and decode step goes: the CUDA kernels of qmamba (and
of mamba_ssm on the same weights, when installed), each ranked by total time, for a few layers of the
full-size shape (per-layer figures scale with the layer count).

    python benchmarks/profile_lm.py --layer mamba1 --layers 4 --seqlen 800 [--out DIR]
    python benchmarks/profile_lm.py --batch 64 --seqlen 168      # the prefill of a batch of 64 VQA prompts
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from qmamba.bench.peers import MambaSSMRunner, peer_available
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.presets import LLM_PRESETS
from qmamba.ops.runtime.timing import wall_ms

SHAPES = {"mamba1": "mamba-2.8b", "mamba2": "mamba2-2.7b"}


def _table(fn, runs: int, label: str, rows: int) -> str:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events) / runs / 1e3
    events.sort(key=lambda e: -e.self_device_time_total)
    lines = [f"## {label}: {total:.3f} ms of kernels per call, {sum(e.count for e in events) // runs} launches",
             "| kernel | ms/call | launches/call |", "| --- | ---: | ---: |"]
    for e in events[:rows]:
        lines.append(f"| {e.key[:90]} | {e.self_device_time_total / runs / 1e3:.3f} | {e.count // runs} |")
    return "\n".join(lines)


def launchers(fn, pattern: str) -> str:
    """Which PyTorch ops launch the kernels whose name contains ``pattern`` (op, input shapes, count)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    seen: dict[str, int] = {}
    for e in prof.events():
        if any(pattern in k.name for k in e.kernels):
            key = f"{e.name} {e.input_shapes}"
            seen[key] = seen.get(key, 0) + 1
    return "\n".join(f"- {n} x {k}" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])) or "- none"


def host_table(fn, label: str, rows: int) -> str:
    """Where the host (CPU) time of one call goes, by op: the part of a launch-bound step that no kernel speeds up."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    lines = [f"## {label}: {total:.2f} ms of host time", "| op | self ms | calls |", "| --- | ---: | ---: |"]
    lines += [f"| {e.key[:80]} | {e.self_cpu_time_total / 1e3:.3f} | {e.count} |" for e in events[:rows]]
    return "\n".join(lines)


def profile_model(name: str, forward, params, ids: torch.Tensor, prefill, decode, rows: int) -> list[str]:
    def train():
        loss = forward(ids).float().logsumexp(-1).mean()
        loss.backward()
        for p in params:
            p.grad = None

    out = []
    for label, fn in (("prefill", prefill), ("train fwd+bwd", train), ("decode step (eager)", decode)):
        if fn is None:
            continue
        ms = wall_ms(fn)
        out.append(f"# {name} {label}: {ms:.3f} ms wall\n" + _table(fn, 3, f"{name} {label}", rows))
    return out


SCANS = ("auto", "chunked", "sequential")
SCAN_HELP = "Mamba-1 scans without gradients: as dispatched, or one kernel throughout"


def set_scan(choice: str) -> None:
    """--scan: the sequential forward from any size (sequential), never (chunked), or as dispatched (auto)."""
    from qmamba.ops.selective_scan import fused_recurrent

    if choice != "auto":
        fused_recurrent.MIN_ROW_CHANNELS = 0 if choice == "sequential" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", choices=tuple(SHAPES), default="mamba1")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=800)
    ap.add_argument("--batch", type=int, default=1, help="rows of the prefill, training step and decode step")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--out", default=None)
    ap.add_argument("--who-launches", default=None, help="list the ops launching kernels named like this")
    ap.add_argument("--host", action="store_true", help="also tabulate the host time of a training step by op")
    ap.add_argument("--scan", choices=SCANS, default="auto", help=SCAN_HELP)
    args = ap.parse_args()
    set_scan(args.scan)
    device = torch.device("cuda")
    cfg = dataclasses.replace(LLM_PRESETS[SHAPES[args.layer]](), n_layer=args.layers)
    torch.manual_seed(0)
    model = MambaLM(cfg, device=device, dtype=torch.bfloat16)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seqlen), device=device)
    tok = ids[:, 0]
    sections = [f"# {torch.cuda.get_device_name()}: {SHAPES[args.layer]} shape, {args.layers} layers, "
                f"{args.batch} x {args.seqlen} tokens, bf16"]

    @torch.inference_mode()
    def q_prefill():
        model.prefill(ids)

    with torch.no_grad():
        _, cache = model.prefill(ids)

    @torch.inference_mode()
    def q_decode():
        model.step(tok, cache)

    if args.who_launches:
        sections.append(f"## ops launching '{args.who_launches}' in one qmamba prefill\n"
                        + launchers(q_prefill, args.who_launches))
    if args.host:
        params = list(model.parameters())

        def q_train():
            model(ids).logits.float().logsumexp(-1).mean().backward()
            for p in params:
                p.grad = None

        sections.append(host_table(q_train, "qmamba train fwd+bwd host time", args.rows))
    sections += profile_model("qmamba", lambda x: model(x).logits, list(model.parameters()), ids, q_prefill,
                              q_decode, args.rows)
    if peer_available("mamba_ssm"):
        peer = MambaSSMRunner(model, device)

        @torch.inference_mode()
        def m_prefill():
            peer.prefill(ids)

        from mamba_ssm.utils.generation import InferenceParams

        params = InferenceParams(max_seqlen=ids.shape[1] + 2, max_batch_size=args.batch)
        with torch.inference_mode():
            peer.model(ids, inference_params=params, num_last_tokens=1)
        params.seqlen_offset = ids.shape[1]  # from here on its layers take the one-token step

        @torch.inference_mode()
        def m_decode():
            peer.model(tok[:, None], inference_params=params, num_last_tokens=1)

        sections += profile_model("mamba_ssm", peer.logits, peer.parameters(), ids, m_prefill, m_decode, args.rows)
    report(sections, args.out, f"profile_{args.layer}.md")


def report(sections: list[str], out_dir: str | None, name: str) -> None:
    """Print the sections; with ``out_dir``, also write them to out_dir/name."""
    text = "\n\n".join(sections)
    print(text)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
