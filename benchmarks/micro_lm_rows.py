"""What the micro LM's training rows hold, on a size's world (CPU, no training): for each packing and row length,
the share of grounded and existence reply tokens whose document starts in the same row (a reply trained without
its scene learns an answer from priors), the rows' fill and the tokens kept; and, for the tunings, the share of
reply tokens that long replies (captions) hold under the per-token loss.

    python benchmarks/micro_lm_rows.py --size small --images 300          # draws a sample world of 300 + 300 images
    python benchmarks/micro_lm_rows.py --world runs/lm-sweep/world         # an existing world

The tokenizer is trained on the world's corpus as ``qmamba micro build`` trains it; documents are the pretraining
kinds (``LMTrainConfig.kinds``) of the training split, in the split's order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from qmamba.micro.corpus import PieceTokens, build_corpus
from qmamba.micro.instruct_lm import IGNORE
from qmamba.micro.pretrain_lm import LMTrainConfig, pack_aligned, select_documents, split_documents
from qmamba.micro.sizes import get_size
from qmamba.micro.tokenizer import train_tokenizer

REPLY_KINDS = ("grounded", "exist")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", help="the micro size whose world settings and vocabulary are used")
    p.add_argument("--world", default=None, help="an existing world folder (else a sample world is drawn)")
    p.add_argument("--images", type=int, default=300, help="align and finetune images of the sample world")
    p.add_argument("--seq-lens", default="512,1024", help="row lengths to measure, comma-separated")
    p.add_argument("--long-reply", type=int, default=12, help="replies of more tokens count as long (captions)")
    return p.parse_args(argv)


def stream_coverage(tokens: PieceTokens, docs, seq_len: int) -> float:
    """Under stream packing, the share of reply tokens of ``REPLY_KINDS`` whose document starts in their row."""
    position, covered, total = 0, 0, 0
    for doc in docs:
        start, offset = position, 0
        for i, piece in enumerate(tokens.pieces(doc)):
            if i % 2 and doc.kind in REPLY_KINDS:
                rows = (start + offset + np.arange(len(piece))) // seq_len
                covered += int((rows == start // seq_len).sum())
                total += len(piece)
            offset += len(piece)
        position += offset
    return covered / max(total, 1)


def long_reply_share(tokens: PieceTokens, docs, long_reply: int) -> tuple[float, int, int]:
    """(share of reply tokens in replies longer than ``long_reply`` tokens, long replies, short replies)."""
    lengths = [len(p) for d in docs if d.kind in REPLY_KINDS for i, p in enumerate(tokens.pieces(d)) if i % 2]
    lengths = np.asarray(lengths)
    long = lengths > long_reply
    return float(lengths[long].sum() / max(lengths.sum(), 1)), int(long.sum()), int((~long).sum())


def main(argv=None) -> int:
    args = parse(argv)
    size = get_size(args.size)
    with tempfile.TemporaryDirectory(prefix="qmamba-rows-") as tmp:
        if args.world:
            from qmamba.data.synth.manifest import SynthManifest

            manifest = SynthManifest.load(args.world)
        else:
            from qmamba.data.synth import synthesize

            settings = {k: v for k, v in size.world.items() if k != "workers"}
            manifest = synthesize(Path(tmp) / "world", seed=1000, n_align=args.images, n_finetune=args.images,
                                  n_eval=4, **settings)
        docs = build_corpus(manifest)
        tokenizer = train_tokenizer([d.text for d in docs], size.vocab_size)
    train, _ = split_documents(docs, LMTrainConfig.heldout_fraction, 0)
    train = select_documents(train, LMTrainConfig().kinds)
    tokens = PieceTokens(tokenizer, train)
    text = [tokens.document(d) for d in train]
    print(f"{len(train)} training documents, {sum(map(len, text))} tokens, vocabulary {len(tokenizer)}\n")
    print("| seq_len | stream: replies with their document's start in the row | aligned: rows | fill | tokens kept |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for seq_len in map(int, args.seq_lens.split(",")):
        ids, labels = pack_aligned(text, seq_len)
        kept = int((labels != IGNORE).sum())
        print(f"| {seq_len} | {100 * stream_coverage(tokens, train, seq_len):.1f}% | {len(ids)} | "
              f"{100 * kept / labels.numel():.1f}% | {100 * kept / sum(map(len, text)):.1f}% |")
    share, n_long, n_short = long_reply_share(tokens, train, args.long_reply)
    print(f"\ntunings: replies of more than {args.long_reply} tokens: {n_long}, others {n_short}; the long ones hold "
          f"{100 * share:.1f}% of the reply tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
