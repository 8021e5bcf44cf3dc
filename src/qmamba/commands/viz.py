"""Draw what a model computes. ``qmamba viz attention --model DIR --image F --out F.png``: for each chosen block
of a Q-Mamba or Q-Former connector and each contiguous group of its queries, the cross-attention weights (mean
over heads) over the image's patch grid, as heat maps over the image in one PNG of labelled panels (one row per
block). ``--mask both`` adds the other mask's maps (local vs global) beside the model's own, from the same weights.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    a = sub.add_parser("attention", help="query cross-attention maps over the image's patch grid",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--model", required=True, help="a multimodal model directory with a qmamba or qformer connector")
    a.add_argument("--image", required=True, help="the image file")
    a.add_argument("--out", required=True, help="the PNG to write")
    a.add_argument("--blocks", type=_int_list, default=None,
                   help="comma-separated block indices, negative from the end, e.g. 0,5,-1 (default: every block)")
    a.add_argument("--mask", choices=["local", "global", "both"], default=None,
                   help="the cross-attention mask to draw (default: the model's own; both: own and the other)")
    a.add_argument("--groups", type=int, default=None,
                   help="contiguous query groups per block (default: one per query up to 8 queries, else 8)")
    a.add_argument("--panel-size", type=int, default=160, help="side of each panel in pixels (default 160)")
    a.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 0,5,-1)") from None


def run(args: argparse.Namespace) -> int:
    from qmamba.viz.attention import attention_figure

    out = attention_figure(args.model, args.image, args.out, blocks=args.blocks, mask=args.mask,
                           n_groups=args.groups, panel=args.panel_size, device=args.device)
    print(out)
    return 0
