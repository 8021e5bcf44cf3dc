"""Where the GPU time of a batch of VQA answers' vision encoder and projector goes: their CUDA kernels ranked by
total time, for a full-size preset with random weights (the LM side: ``profile_lm.py``).

    python benchmarks/profile_vqa.py --preset qmamba-128 --batch 64 [--scan auto|chunked|sequential] [--out DIR]
"""

from __future__ import annotations

import argparse

import torch
from profile_lm import SCAN_HELP, SCANS, _table, report, set_scan

from qmamba.bench.multimodal import build_multimodal, vqa_inputs
from qmamba.bench.options import BenchOptions
from qmamba.ops.runtime.timing import wall_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="qmamba-128")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--scan", choices=SCANS, default="auto", help=SCAN_HELP)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    set_scan(args.scan)
    device = torch.device("cuda")
    opts = BenchOptions(tiny=False)
    model = build_multimodal(args.preset, opts, device, torch.bfloat16)
    ids, pixels = vqa_inputs(model, args.batch, opts.question_len, device, opts.seed)
    sections = [f"# {torch.cuda.get_device_name()}: {args.preset}, batch {args.batch}, bf16, scan {args.scan}"]
    with torch.inference_mode():
        features = model.vision(pixels)
        dtype = next(model.connector.parameters()).dtype
        stages = (("vision encoder", lambda: model.vision(pixels)),
                  ("projector", lambda: model.connector(features.to(dtype))))
        for label, fn in stages:
            sections.append(f"# {label}: {wall_ms(fn):.2f} ms wall (eager)\n" + _table(fn, 3, label, args.rows))
    report(sections, args.out, f"profile_{args.preset}_b{args.batch}.md")


if __name__ == "__main__":
    main()
