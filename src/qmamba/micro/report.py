"""What a micro build records beside the weights: file sizes (with the 20 MB budget), library versions,
and the README that says what the assets are, how well they do and how to rebuild them."""

from __future__ import annotations

import platform
from pathlib import Path

from qmamba.errors import ConfigError

SIZE_LIMIT = 20_000_000  # bytes, every file of the build together (the repo ships them)


def file_sizes(out: Path, parts: tuple[str, ...]) -> dict[str, int]:
    """Bytes of every file under ``out / part`` (and of ``out / part`` itself when it is a file)."""
    sizes = {}
    for part in parts:
        path = out / part
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.is_file()
        sizes.update({str(p.relative_to(out)): p.stat().st_size for p in files})
    return sizes


def check_size(sizes: dict[str, int], limit: int | None = None) -> int:
    """The total; raises ``ConfigError`` listing the largest files when it exceeds ``limit`` (default
    ``SIZE_LIMIT``)."""
    limit = SIZE_LIMIT if limit is None else limit
    total = sum(sizes.values())
    if total > limit:
        largest = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
        raise ConfigError(f"the micro assets take {total / 1e6:.2f} MB, over the {limit / 1e6:.0f} MB budget "
                          f"({largest}); shrink the models or save them in bf16")
    return total


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that made the assets."""
    import numpy
    import tokenizers
    import torch
    import transformers

    import qmamba

    return {"python": platform.python_version(), "qmamba": qmamba.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": numpy.__version__}


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def readme(record: dict) -> str:
    """README.md of the assets folder, from the build record (``build.json``)."""
    lm, vis, world = record["lm"], record["vision"], record["world"]
    later = lm.get("choice_sft_run")  # the choice tuning run on its own, after the build
    after = (f" The tuning with the multiple-choice drills ran afterwards from the built LM, on {later['device']} in "
             f"{later['seconds'] / 60:.1f} minutes ({later['command']}).") if later else ""
    return f"""# qmamba micro backbones

Pretrained by qmamba's own scripts on the synthetic micro-world (seed {record['seed']}), in
{record['seconds']['total'] / 60:.1f} minutes on {record['device']} ({record['threads']} threads).{after} Rebuild with

    qmamba micro build --out DIR --seed {record['seed']} --device {record['device']} \\
        --lm-steps {lm['config']['steps']} --lm-batch-size {lm['config']['batch_size']} \\
        --sft-steps {lm['config'].get('sft_steps', 0)} --choice-sft-steps {lm['config'].get('choice_sft_steps', 0)} \\
        --vision-steps {vis['config']['steps']} --world-size {world['n_align']}

| folder | what | format |
| --- | --- | --- |
| `siglip/` | SigLIP (64 px, patch 8, 64 patches of width 128, 4 layers) + its text tower, trained with the sigmoid image-text loss on {vis['train_pairs']} align pairs | transformers `SiglipModel` (config.json, model.safetensors, preprocessor_config.json) |
| `mamba/` | Mamba-1 LM (d_model 192, 4 layers, d_state 16, vocab {lm['vocab_size']}), {lm['parameters']:,} parameters, trained on {lm['tokens_seen']:,} tokens, then instruction-tuned for {lm['config'].get('sft_steps', 0)} steps of {lm['config'].get('sft_batch_size', 0)} conversations (loss on the replies), then {lm['config'].get('choice_sft_steps', 0)} more with the multiple-choice drills | mamba_ssm (config.json, model.safetensors) |
| both | byte-level BPE tokenizer with `<|endoftext|>` (0: eos, pad), `<|user|>`, `<|assistant|>` | transformers tokenizer files |

The LM's text comes from the world's training files only (captions, zephyr-templated instructions, the
same conversations with the image described in words, scene descriptions, POPE-style existence drills and
MMBench-style multiple-choice drills on the scenes in words); the evaluation sets are never read.

## Measured

| | value |
| --- | --- |
| LM train loss (last 50 steps) | {lm['train_loss']:.3f} |
| LM held-out loss, every token (before -> after) | {lm['heldout_loss_before']:.3f} -> {lm['heldout_loss']:.3f} |
| LM instruction-tuning reply loss (last 50 steps) | {_num(lm.get('sft_loss'))} |
| LM reply loss of the tuning with the multiple-choice drills (last 50 steps) | {_num(lm.get('choice_sft_loss'))} |
| LM held-out first-answer accuracy, image described in words | {_pct(lm['answer_accuracy_grounded'])} |
| LM held-out first-answer accuracy, no image (prior) | {_pct(lm['answer_accuracy_chat'])} |
| LM held-out existence-drill accuracy, image described in words | {_pct(lm.get('answer_accuracy_exist'))} |
| LM held-out multiple-choice-drill accuracy, image described in words | {_pct(lm.get('answer_accuracy_choice'))} |
| SigLIP train loss (last 50 steps) | {vis['train_loss']:.3f} |
| SigLIP image -> caption top-1 among {vis['config']['eval_batch']} held-out (before -> after; chance {_pct(vis['retrieval_chance'])}) | {_pct(vis['retrieval_top1_before'])} -> {_pct(vis['retrieval_top1'])} |
| files | {record['total_bytes'] / 1e6:.2f} MB |

## Use

```python
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.vision import VisionEncoder
from qmamba.data.tokenizer import load_tokenizer

lm = MambaLM.from_pretrained("mamba")            # a training config names it assets:micro/mamba
tok = load_tokenizer("mamba")
vision = VisionEncoder.from_pretrained("siglip")  # (b, 3, 64, 64) -> (b, 64, 128) patch features
```

Details (every setting, loss curves, library versions): `build.json`.
"""
