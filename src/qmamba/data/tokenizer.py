"""Loading a tokenizer from a local checkpoint directory (transformers' tokenizer files)."""

from __future__ import annotations

from pathlib import Path

from qmamba.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(path: str | Path):
    """A transformers tokenizer from ``path`` (offline). Mamba LMs use GPT-NeoX's tokenizer: state-spaces
    checkpoints ship none, so pass a directory that holds one (e.g. EleutherAI/gpt-neox-20b's files)."""
    path = Path(path)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(f"no tokenizer in {path} (looked for {', '.join(TOKENIZER_FILES)}); "
                              f"copy the tokenizer files there or pass --tokenizer DIR")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it would warn that a qmamba config.json is not a transformers model
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many kinds for broken files
        raise CheckpointError(f"cannot load the tokenizer in {path}: {type(e).__name__}: {str(e)[:300]}") from None
    finally:
        hf_logging.set_verbosity(level)
