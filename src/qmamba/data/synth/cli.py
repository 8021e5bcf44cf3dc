"""``qmamba data synth``: generate the micro-world from the command line."""

from __future__ import annotations

import argparse
import time

from qmamba.data.synth.chance import chance_levels
from qmamba.data.synth.pipeline import TASK_NAMES, synthesize
from qmamba.data.synth.style import STYLES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qmamba data synth",
        description="Generate the synthetic micro-world: align/finetune conversations in LLaVA format and six "
                    "evaluation sets (VQAv2, GQA, VizWiz, TextVQA, POPE, MMBench) in their official formats.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (64, 96, 128, ...)")
    p.add_argument("--grid", type=int, default=3, help="grid cells per side")
    p.add_argument("--n-align", type=int, default=4000, help="align-stage images (one caption each)")
    p.add_argument("--n-finetune", type=int, default=4000, help="finetune-stage images (one conversation each)")
    p.add_argument("--n-eval", type=int, default=200, help="images per evaluation set")
    for task in TASK_NAMES:
        p.add_argument(f"--n-{task}", type=int, default=None, help=f"images of the {task} set (default --n-eval)")
    p.add_argument("--min-objects", type=int, default=1, help="fewest objects per scene")
    p.add_argument("--max-objects", type=int, default=5, help="most objects per scene")
    p.add_argument("--style", choices=tuple(STYLES), default="plain",
                   help="drawing style of every scene (plain: the default world; varied: shades, sizes, offsets, "
                        "outlines and noise vary)")
    p.add_argument("--heldout-style", choices=tuple(STYLES), default=None,
                   help="also write every evaluation set drawn in this style, never used in training, "
                        "under eval-<style>/ (e.g. light: a light background with dark outlines)")
    p.add_argument("--text-prob", type=float, default=0.15, help="chance that an object is a word or number")
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg",
                   help="jpg (quality 95, 4:4:4; the official file names) or png (lossless)")
    p.add_argument("--workers", type=int, default=0, help="render in this many processes (same output)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous micro-world in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``qmamba data synth`` with ``argv``; prints the counts and chance levels; returns 0."""
    args = build_parser().parse_args(argv)
    sizes = {t: getattr(args, f"n_{t}") for t in TASK_NAMES if getattr(args, f"n_{t}") is not None}
    start = time.perf_counter()
    manifest = synthesize(
        args.out, seed=args.seed, image_size=args.image_size, grid=args.grid, n_align=args.n_align,
        n_finetune=args.n_finetune, n_eval=args.n_eval, eval_sizes=sizes, max_objects=args.max_objects,
        text_prob=args.text_prob, image_format=args.image_format, workers=args.workers,
        overwrite=args.overwrite, progress=not args.no_progress, style=args.style,
        heldout_style=args.heldout_style, min_objects=args.min_objects,
    )
    seconds = time.perf_counter() - start
    counts = manifest.counts
    print(f"wrote {manifest.root} in {seconds:.1f} s: {counts['align']} align, {counts['finetune']} finetune "
          f"({counts['finetune_turns']} turns)")
    chance = chance_levels(manifest)
    for task, c in counts["eval"].items():
        print(f"  {task:8s} {c['images']:6d} images {c['questions']:7d} questions   chance {100 * chance[task]:5.1f}%")
    for style in manifest.heldout_styles:
        print(f"  held-out style {style!r}: the same evaluation sets under {manifest.root}/eval-{style}/")
    return 0
