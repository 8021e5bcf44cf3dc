"""Run the whole paper pipeline at micro scale: generate the micro-world, train a micro Q-Mamba MLLM on
qmamba's shipped micro backbones (align, then finetune), score it on the six micro-benchmarks, and answer
a question about a sample image. About 6 minutes on 2 CPU cores; uses a GPU when there is one.

The model directory it leaves works with `qmamba generate --model <out>/train/1-finetune/model ...`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from qmamba.quickstart import QuickstartConfig

    d = QuickstartConfig()
    p.add_argument("--out", default=d.out, help=f"run directory (default {d.out})")
    p.add_argument("--preset", default=d.preset, help="a micro-* preset (see qmamba info --list-presets)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--n-align", type=int, default=d.n_align, help="align-stage images")
    p.add_argument("--n-finetune", type=int, default=d.n_finetune, help="finetune-stage images")
    p.add_argument("--n-eval", type=int, default=d.n_eval, help="images per evaluation set")
    p.add_argument("--align-epochs", type=float, default=d.align_epochs)
    p.add_argument("--finetune-epochs", type=float, default=d.finetune_epochs)
    p.add_argument("--align-batch-size", type=int, default=d.align_batch_size)
    p.add_argument("--finetune-batch-size", type=int, default=d.finetune_batch_size)
    p.add_argument("--device", default=None, help="cpu or cuda (default: the GPU if there is one)")


def run(args: argparse.Namespace) -> int:
    import time

    from qmamba.quickstart import QuickstartConfig, pope_note, run_quickstart, sample_answer, score_table

    start = time.perf_counter()
    q = QuickstartConfig(out=args.out, preset=args.preset, seed=args.seed, n_align=args.n_align,
                         n_finetune=args.n_finetune, n_eval=args.n_eval, align_epochs=args.align_epochs,
                         finetune_epochs=args.finetune_epochs, align_batch_size=args.align_batch_size,
                         finetune_batch_size=args.finetune_batch_size, device=args.device)
    result = run_quickstart(q)
    print("\nmicro-benchmarks (scored by the official rules; chance = an answer that ignores the image)")
    print(score_table(result))
    print(pope_note(result))
    question, image, answer, truth = sample_answer(result)
    print(f"\nsample: {image}\n  Q: {question}\n  A: {answer}   (ground truth: {truth})")
    t = result["timings"]
    print(f"\ndone in {time.perf_counter() - start:.0f} s (data {t['data_s']:.0f} s, training {t['train_s']:.0f} s, "
          f"evaluation {t['eval_s']:.0f} s)\nmodel: {result['model']}\n"
          f"try:   qmamba generate --model {result['model']} --image {image} --prompt \"{question}\"")
    return 0
