"""The bench's output: a markdown table per section (the LM figures with ratios to mamba_ssm, the VQA
figures) and the whole result as JSON."""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE = "mamba_ssm"  # ratios are to this implementation, where it ran

# (key in an implementation's figures, column title; {} takes the options)
LM_COLUMNS = (
    ("decode_b1_ms", "decode b1 ms/token"),
    ("decode_batch_ms", "decode b{batch_decode} ms/step"),
    ("prefill_ms", "prefill {prompt_len} ms"),
    ("prefill_eager_ms", "eager prefill ms"),
    ("train_ms", "train fwd+bwd {train_batch}x{train_len} ms"),
    ("train_eager_ms", "eager train ms"),
    ("train_peak_gib", "train peak GiB"),
)
VQA_COLUMNS = (
    ("visual_tokens", "visual tokens"),
    ("vision_ms", "vision ms"),
    ("projector_ms", "projector ms"),
    ("lm_prefill_ms", "LM prefill ms"),
    ("decode_ms", "decode {answer_tokens} tok ms"),
    ("total_ms", "total b1 ms"),
    ("answers_per_s", "answers/s b{vqa_batch}"),
)


def fmt(value) -> str:
    """A figure for a table cell: about three significant digits, '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    a = abs(value)
    return f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 0.1 else f"{value:.3g}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a table row has {len(row)} cells for {len(headers)} headers: {row}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(figures: dict, key: str, reference: dict | None) -> str:
    value = figures.get(key)
    text = fmt(value)
    ref = (reference or {}).get(key)
    if isinstance(value, (int, float)) and isinstance(ref, (int, float)) and ref > 0 and figures is not reference:
        text += f" ({value / ref:.2f}x)"
    return text


def lm_table(lm: dict, options: dict) -> str:
    """One row per (model, implementation); a failed implementation shows its error."""
    headers = ["model", "implementation"] + [title.format(**options) for _, title in LM_COLUMNS]
    rows = []
    for model, section in lm.items():
        impls = section.get("impls", {})
        reference = impls.get(REFERENCE) if "error" not in impls.get(REFERENCE, {"error": 1}) else None
        for name, figures in impls.items():
            if "error" in figures:
                rows.append([model, name, f"error: {figures['error'][:60]}"] + [""] * (len(LM_COLUMNS) - 1))
            else:
                rows.append([model, name] + [_cell(figures, key, reference) for key, _ in LM_COLUMNS])
    return markdown_table(headers, rows)


def vqa_table(vqa: dict, options: dict) -> str:
    headers = ["preset"] + [title.format(**options) for _, title in VQA_COLUMNS]
    rows = []
    for preset, figures in vqa.items():
        if "error" in figures:
            rows.append([preset, f"error: {figures['error'][:60]}"] + [""] * (len(VQA_COLUMNS) - 1))
        else:
            rows.append([preset] + [fmt(figures.get(key)) for key, _ in VQA_COLUMNS])
    return markdown_table(headers, rows)


BATCH_COLUMNS = (("vision_ms", "vision ms"), ("projector_ms", "projector ms"), ("lm_prefill_ms", "LM prefill ms"),
                 ("decode_ms", "decode {answer_tokens} tok ms"), ("total_ms", "total ms"))


def vqa_batch_table(vqa: dict, options: dict) -> str:
    """The components of the throughput figure: the same stages at batch ``vqa_batch``."""
    headers = ["preset"] + [title.format(**options) for _, title in BATCH_COLUMNS]
    rows = [[preset] + [fmt(figures["batch_components"].get(key)) for key, _ in BATCH_COLUMNS]
            for preset, figures in vqa.items() if "batch_components" in figures]
    return markdown_table(headers, rows)


UTILISATION_ROWS = (("vision", "vision"), ("projector", "projector"), ("lm_prefill", "LM prefill"),
                    ("decode", "decode"))


def _rate(r: dict | None) -> tuple[str, str]:
    if not r:
        return "-", "-"
    return (f"{fmt(r['tflops'])} ({100 * r['matmul_frac']:.0f}%)", f"{fmt(r['gbs'])} ({100 * r['copy_frac']:.0f}%)")


def utilisation_table(vqa: dict, options: dict) -> str:
    """Achieved product TFLOP/s and least-traffic GB/s of each component, as fractions of the measured peaks."""
    b = options["vqa_batch"]
    headers = ["preset", "component", "b1 TFLOP/s (of peak)", "b1 GB/s (of peak)", f"b{b} TFLOP/s (of peak)",
               f"b{b} GB/s (of peak)"]
    rows = []
    for preset, figures in vqa.items():
        one, many = figures.get("utilisation") or {}, figures.get("batch_utilisation") or {}
        for key, title in UTILISATION_ROWS:
            if key in one or key in many:
                rows.append([preset, title, *_rate(one.get(key)), *_rate(many.get(key))])
    return markdown_table(headers, rows)


def peaks_line(vqa: dict) -> str:
    peaks = next((v["peaks"] for v in vqa.values() if "peaks" in v), None)
    if peaks is None:
        return ""
    return (f"Measured peaks: {fmt(peaks['matmul_tflops'])} TFLOP/s ({peaks['dtype']} {peaks['matmul_n']}^3 "
            f"matmul), {fmt(peaks['copy_gbs'])} GB/s (copy). FLOPs are the matrix products'; bytes the least "
            f"traffic (weights once, inputs and outputs once).")


def train_table(rows_in: dict) -> str:
    headers = ["preset", "stage", "batch x tokens", "step ms", "peak GiB"]
    rows = []
    for preset, r in rows_in.items():
        if "error" in r:
            rows.append([preset, f"error: {r['error'][:60]}", "", "", ""])
        else:
            rows.append([preset, r["stage"], f"{r['batch']}x{r['sequence']}", fmt(r["step_ms"]), fmt(r["peak_gib"])])
    return markdown_table(headers, rows)


def render(results: dict) -> str:
    """All tables, headed by the device, dtype and the options that shape the figures."""
    opts = results["options"]
    mode = (", quick" if opts["quick"] else "") + (", tiny shapes" if opts["tiny"] else "")
    if opts.get("local_attention", "naive") != "naive":
        mode += f", {opts['local_attention']} local attention"
    parts = [f"## qmamba bench on {results['device']} ({results['dtype']}, torch {results['env']['torch']}, "
             f"backend {results['backend']}{mode})"]
    if results.get("lm"):
        parts += ["", f"Language models, random weights. (r x): ratio to {REFERENCE} on the same weights "
                      f"(below 1 is faster / smaller).", "", lm_table(results["lm"], opts)]
    if results.get("vqa"):
        parts += ["", f"One VQA answer: {opts['image_size_note']} image + {opts['question_len']}-token question -> "
                      f"{opts['answer_tokens']} tokens, batch 1 components and batch {opts['vqa_batch']} throughput "
                      f"(CUDA graphs on a GPU).", "", vqa_table(results["vqa"], opts)]
        if any("batch_components" in v for v in results["vqa"].values()):
            parts += ["", f"The same components at batch {opts['vqa_batch']}.", "",
                      vqa_batch_table(results["vqa"], opts)]
        if any("utilisation" in v for v in results["vqa"].values()):
            parts += ["", "Utilisation of each component. " + peaks_line(results["vqa"]), "",
                      utilisation_table(results["vqa"], opts)]
    if results.get("vqa_train"):
        parts += ["", "One multimodal training step (finetune stage and its optimizer, bf16 autocast, "
                      "activation checkpointing).", "", train_table(results["vqa_train"])]
    return "\n".join(parts)


def write_json(results: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
