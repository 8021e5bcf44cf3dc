"""How well a micro LM answers the POPE-like questions when each image is replaced by its exact detailed caption
in words (the "grounded" documents of its pretraining): an upper bound on what any connector can reach through
this LM. Prints accuracy and yes-ratio per split, and on the MMBench-like questions (letter by greedy first
token) the accuracy per row and under CircularEval (every circular copy right), beside a uniform guess.

    qmamba data synth --out /tmp/world --n-align 200 --n-finetune 200
    python benchmarks/micro_lm_grounding.py --world /tmp/world [--lm src/qmamba/assets/micro/mamba]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qmamba.data.tokenizer import load_tokenizer
from qmamba.micro.grounding import SPLITS, score_mmbench, score_split
from qmamba.models.mamba_lm import MambaLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="a synth world (qmamba data synth --out ...)")
    parser.add_argument("--lm", default=str(Path(__file__).parents[1] / "src/qmamba/assets/micro/mamba"))
    args = parser.parse_args()
    lm, tokenizer = MambaLM.from_pretrained(args.lm).eval(), load_tokenizer(args.lm)
    print("| split | questions | accuracy | yes-ratio |\n| --- | ---: | ---: | ---: |")
    for split in SPLITS:
        r = score_split(lm, tokenizer, Path(args.world) / "eval" / "pope", split)
        print(f"| {r['split']} | {r['questions']} | {100 * r['accuracy']:.1f} | {r['yes_ratio']:.2f} |")
    m = score_mmbench(lm, tokenizer, Path(args.world) / "eval" / "mmbench")
    print(f"\nMMBench-like: {100 * m['accuracy']:.1f}% of {m['questions']} rows (uniform guess "
          f"{100 * m['chance']:.1f}%),\nCircularEval {100 * m['circular']:.1f}% "
          f"(guess {100 * m['circular_chance']:.1f}%)")


if __name__ == "__main__":
    main()
