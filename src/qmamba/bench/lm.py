"""Language-model figures: decode (batch 1 and a larger batch), prefill, training forward+backward.

Every implementation is timed the same way on the same random weights (``bench.runner.LMRunner`` is the interface):

    decode ms/token   median of (time of generate(1 + n new tokens) - time of generate(1)) / n, greedy, no EOS
    prefill ms        the prompt through the model, returning the last logits and the recurrent state
                      (qmamba: the captured prefill; its eager prefill is a column of its own)
    train ms, GiB     logits -> cross-entropy (fp32) -> backward of every weight, peak memory during it
                      (qmamba: the step captured as a CUDA graph; its eager step is a column of its own,
                      the peak is the eager step's)
"""

from __future__ import annotations

import dataclasses
import statistics
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from qmamba.bench.options import BenchOptions
from qmamba.bench.runner import LMRunner
from qmamba.ops.runtime.timing import free_memory, peak_gib, time_ms


def _ids(batch: int, length: int, vocab: int, device: torch.device, seed: int) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).to(device)


def decode_ms(runner: LMRunner, batch: int, opts: BenchOptions, vocab: int, device: torch.device) -> float:
    """The median over repeats of (generate n + 1 - generate 1) / n, each pair timed back to back: a slow call
    on either side moves one pair, not the figure (two separate medians can disagree by far more than noise)."""
    ids = _ids(batch, opts.decode_prompt_len, vocab, device, opts.seed)
    n = opts.decode_tokens
    with torch.inference_mode():
        for _ in range(opts.warmup):
            runner.generate(ids, n + 1)
            runner.generate(ids, 1)
        diffs = [time_ms(lambda: runner.generate(ids, n + 1), device, 0, 1)
                 - time_ms(lambda: runner.generate(ids, 1), device, 0, 1) for _ in range(max(opts.repeats, 1))]
    return statistics.median(diffs) / n


def train_figures(runner: LMRunner, opts: BenchOptions, vocab: int, device: torch.device) -> dict:
    ids = _ids(opts.train_batch, opts.train_len, vocab, device, opts.seed + 1)
    params = [p for p in runner.parameters() if p.requires_grad]

    def loss() -> Tensor:
        logits = runner.logits(ids)  # (b, l, v)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())

    def step():
        for p in params:
            p.grad = None
        loss().backward()

    out = {"train_ms": time_ms(step, device, opts.warmup, opts.repeats)}
    for p in params:
        p.grad = None
    out["train_peak_gib"] = peak_gib(step, device)
    for p in params:
        p.grad = None
    captured = runner.captured_train(loss, params)
    if captured is not None:  # the captured step is the headline figure, the eager one stays beside it
        out["train_eager_ms"] = out["train_ms"]
        out["train_ms"] = time_ms(captured, device, opts.warmup, opts.repeats)
        del captured
        for p in params:
            p.grad = None
    return out


def lm_figures(runner: LMRunner, opts: BenchOptions, vocab: int, device: torch.device, train: bool) -> dict:
    if runner.slow:
        opts = dataclasses.replace(opts, repeats=min(opts.repeats, 3), warmup=min(opts.warmup, 1),
                                   decode_tokens=min(opts.decode_tokens, 16))
    out = {"decode_b1_ms": decode_ms(runner, 1, opts, vocab, device)}
    if not runner.slow:
        out["decode_batch_ms"] = decode_ms(runner, opts.batch_decode, opts, vocab, device)
    ids = _ids(1, opts.prompt_len, vocab, device, opts.seed + 2)
    with torch.inference_mode():
        out["prefill_ms"] = time_ms(lambda: runner.prefill(ids), device, opts.warmup, opts.repeats)
    if train:
        out.update(train_figures(runner, opts, vocab, device))
    out.update(runner.extra(opts, device))
    return out


def guarded(what: str, fn: Callable[[], dict], errors: list) -> dict:
    """fn()'s figures, or {'error': ...} (also appended to ``errors``) when it raises: one failing
    implementation must not lose the others' figures."""
    try:
        return fn()
    except Exception as e:  # reported in the JSON and the table, traceback on stderr
        traceback.print_exc()
        msg = f"{type(e).__name__}: {e}".splitlines()[0]
        errors.append(f"{what}: {msg}")
        return {"error": msg}


def _runner(name: str, model, device: torch.device) -> LMRunner:
    from qmamba.bench.peers import peer_runner
    from qmamba.bench.qmamba_runner import QMambaRunner

    if name in ("qmamba", "qmamba-ref"):
        return QMambaRunner(model, "ref" if name == "qmamba-ref" else "auto", device)
    return peer_runner(name, model, device)


def run_lm_section(layer: str, opts: BenchOptions, device: torch.device, dtype: torch.dtype, errors: list,
                   done: Callable[[str, dict], None] | None = None) -> dict:
    """Figures of every implementation for one LM shape; each runner is built, timed and freed in turn, and
    ``done(name, figures)`` is told as each finishes."""
    from qmamba.bench.peers import peer_available
    from qmamba.bench.qmamba_runner import build_lm

    model = build_lm(layer, opts, device, dtype)
    cfg = model.config
    section = {"config": {"layer": cfg.layer, "d_model": cfg.d_model, "n_layer": cfg.n_layer,
                          "vocab": cfg.padded_vocab_size, "ssm_cfg": cfg.ssm_cfg,
                          "parameters_M": round(model.num_parameters() / 1e6, 1)},
               "impls": {}, "skipped": [p for p in opts.peers if not peer_available(p)]}
    names = ["qmamba"] + (["qmamba-ref"] if opts.ref_backend else []) + [
        p for p in opts.peers if peer_available(p)]
    for name in names:
        def figures(name=name):
            runner = _runner(name, model, device)
            try:
                train = runner.train_by_default or opts.transformers_train
                return lm_figures(runner, opts, cfg.vocab_size, device, train)
            finally:
                runner.close()
        section["impls"][name] = guarded(f"{layer} {name}", figures, errors)
        if done is not None:
            done(name, section["impls"][name])
        free_memory(device)
    return section
