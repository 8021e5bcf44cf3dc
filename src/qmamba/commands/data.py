"""Data tools. ``qmamba data synth --out DIR``: generate the synthetic micro-world (training sets in LLaVA
format and six evaluation sets in the official formats); ``qmamba data synth --help`` for its options."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["synth"], help="synth: generate the micro-world")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the action's own options")


def run(args: argparse.Namespace) -> int:
    from qmamba.data.synth.cli import main

    return int(main(args.args) or 0)
