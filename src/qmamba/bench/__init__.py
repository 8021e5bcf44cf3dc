"""``qmamba bench``: speed and memory of qmamba's language models and multimodal models against peers.

    run_bench(BenchOptions(...)) -> results (a JSON-ready dict);  report.render(results) -> markdown

Sections: ``lm-mamba1`` / ``lm-mamba2`` (Mamba-2.8B / Mamba2-2.7B shapes: decode, prefill, training, for
qmamba and, where importable, mamba_ssm and transformers on the same weights), ``vqa`` (latency by component
and throughput of one answer for full-size presets), ``vqa-train`` (one multimodal training step).
Tables, not assertions: nothing here fails on a slow figure.
"""

from __future__ import annotations

import platform

import torch

from qmamba.bench.options import BenchOptions
from qmamba.utils.device import resolve_device


def _env(device: torch.device) -> dict:
    from qmamba.bench.peers import peer_version

    env = {"torch": torch.__version__, "python": platform.python_version(),
           "triton": peer_version("triton"), "mamba_ssm": peer_version("mamba_ssm"),
           "transformers": peer_version("transformers")}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def headline(figures: dict) -> str:
    """The timings of one implementation or preset on one line (as they come: a killed run keeps them)."""
    from qmamba.bench.report import fmt

    if "error" in figures:
        return f"error: {figures['error']}"
    return ", ".join(f"{k} {fmt(v)}" for k, v in figures.items() if k.endswith(("_ms", "_gib", "_per_s")))


def run_bench(options: BenchOptions, log=print, checkpoint=None) -> dict:
    """Run the chosen sections; a failing implementation or preset is recorded in ``errors``, not raised.
    Each implementation's or preset's figures are logged when done, and ``checkpoint(results)`` is called
    with the results so far (the command writes its JSON there). The query connectors' local cross-attention
    runs with ``options.local_attention``."""
    from qmamba.ops.local_attention import use_local_attention

    with use_local_attention(options.local_attention):
        return _run_bench(options, log, checkpoint)


def _run_bench(options: BenchOptions, log, checkpoint) -> dict:
    from qmamba.bench.lm import guarded, run_lm_section
    from qmamba.bench.multimodal import train_step_figures, vqa_figures
    from qmamba.bench.qmamba_runner import active_backend
    from qmamba.ops.runtime.timing import free_memory

    device = resolve_device(options.device)
    opts = options.resolved(device.type == "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
               "dtype": str(dtype).removeprefix("torch."), "backend": active_backend(device),
               "env": _env(device), "options": opts.to_dict(), "lm": {}, "vqa": {}, "vqa_train": {}, "errors": []}
    errors = results["errors"]

    def done(what: str, figures: dict) -> None:
        log(f"[bench] {what}: {headline(figures)}")
        if checkpoint is not None:
            checkpoint(results)

    for layer in ("mamba1", "mamba2"):
        if f"lm-{layer}" in opts.sections:
            log(f"[bench] lm-{layer} ...")
            results["lm"][layer] = run_lm_section(layer, opts, device, dtype, errors,
                                                  lambda name, f, layer=layer: done(f"{layer} {name}", f))
            free_memory(device)
    if "vqa" in opts.sections:
        for preset in opts.presets:
            log(f"[bench] vqa {preset} ...")
            results["vqa"][preset] = guarded(f"vqa {preset}", lambda p=preset: vqa_figures(p, opts, device, dtype),
                                             errors)
            done(f"vqa {preset}", results["vqa"][preset])
            free_memory(device)
    for preset in opts.train_presets if "vqa-train" in opts.sections else ():
        log(f"[bench] vqa-train {preset} ...")
        results["vqa_train"][preset] = guarded(f"vqa-train {preset}",
                                               lambda p=preset: train_step_figures(p, opts, device), errors)
        done(f"vqa-train {preset}", results["vqa_train"][preset])
        free_memory(device)
    from qmamba.ops.runtime.measured_choice import measured_choices

    results["choices"] = measured_choices()  # which tiles / paths the decode ops measured fastest on this device
    for op, chosen in results["choices"].items():
        log(f"[bench] {op} chose: " + "; ".join(f"{key} -> {value}" for key, value in chosen.items()))
    image_sizes = sorted({v["image_size"] for v in results["vqa"].values() if "image_size" in v})
    results["options"]["image_size_note"] = "/".join(f"{s} px" for s in image_sizes) or "-"
    return results


__all__ = ["BenchOptions", "headline", "run_bench"]
