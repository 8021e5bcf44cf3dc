"""The micro-world's tokenizer: byte-level BPE trained with ``tokenizers`` on the micro-world's text.

    tok = train_tokenizer(texts, vocab_size=1024, out_dir="micro/mamba")   # a transformers tokenizer

Special tokens, each one id that BPE never splits: ``<|endoftext|>`` (id 0: end of text, end of turn,
padding and unknown, as in GPT-NeoX's tokenizer that Mamba uses), ``<|user|>`` (1), ``<|assistant|>``
(2): the markers of the zephyr chat template. No token is added when encoding (no bos), and decoding
does not touch spaces, so ``decode(encode(x)) == x`` for every text. ``vocab_size`` is an upper bound:
merges stop when no pair of tokens repeats, and the micro-world's small lexicon saturates at about 680 ids
(every word of it is then one token); the LM takes the tokenizer's actual size.

The directory holds tokenizer.json, tokenizer_config.json and special_tokens_map.json; it loads
offline with ``qmamba.data.tokenizer.load_tokenizer`` or ``AutoTokenizer.from_pretrained`` (transformers 4
or 5: the config names the class ``PreTrainedTokenizerFast``, which both know).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from qmamba.errors import ConfigError

EOS = "<|endoftext|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS = (EOS, USER, ASSISTANT)  # ids 0, 1, 2
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte, then the specials
PORTABLE_CLASS = "PreTrainedTokenizerFast"  # tokenizer_config.json's class, loadable by transformers 4 and 5


def build_bpe(texts: Iterable[str], vocab_size: int):
    """A trained ``tokenizers.Tokenizer``: byte-level BPE whose first ids are ``SPECIAL_TOKENS``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ConfigError(f"vocab_size={vocab_size}: a byte-level BPE needs at least {MIN_VOCAB} ids "
                          f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    got = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if got != list(range(len(SPECIAL_TOKENS))):
        raise ConfigError(f"the BPE trainer gave the special tokens ids {got}, expected 0..{len(SPECIAL_TOKENS) - 1}")
    return tok


def wrap(tok):
    """The transformers fast tokenizer around a ``tokenizers.Tokenizer`` (specials set, spaces untouched)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=EOS, bos_token=None,
        additional_special_tokens=[USER, ASSISTANT], clean_up_tokenization_spaces=False,
        model_max_length=1 << 20, padding_side="right")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, out_dir: str | Path | None = None):
    """Train the byte-level BPE on ``texts``; save it to ``out_dir`` when given; return the transformers
    tokenizer. Deterministic: the same texts give the same files byte for byte."""
    texts = list(texts)
    if not texts:
        raise ConfigError("train_tokenizer: no texts given")
    tokenizer = wrap(build_bpe(texts, vocab_size))
    if out_dir is not None:
        save_tokenizer(tokenizer, out_dir)
    return tokenizer


def save_tokenizer(tokenizer, out_dir: str | Path) -> Path:
    """Write the tokenizer files (``TOKENIZER_FILES``) to ``out_dir``; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    _portable_class(out)
    _fill_special_tokens_map(out)
    missing = [f for f in TOKENIZER_FILES if not (out / f).is_file()]
    if missing:
        raise ConfigError(f"saving the tokenizer to {out} did not write {missing}")
    return out


def _portable_class(out: Path) -> None:
    """Name the class both transformers 4 and 5 know: 5 writes ``TokenizersBackend``, which 4 cannot load."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = PORTABLE_CLASS
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fill_special_tokens_map(out: Path) -> None:
    """Write special_tokens_map.json (transformers 5 no longer does) so older transformers read the specials."""
    specials = {"eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
                "additional_special_tokens": [USER, ASSISTANT]}
    path = out / "special_tokens_map.json"
    if not path.is_file():
        path.write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")


def check_tokenizer(tokenizer) -> None:
    """Raise ``ConfigError`` unless each special token is one id (0, 1, 2) and eos/pad are id 0."""
    for expected, token in enumerate(SPECIAL_TOKENS):
        ids = tokenizer.encode(token, add_special_tokens=False)
        if ids != [expected]:
            raise ConfigError(f"tokenizer: {token!r} encodes to {ids}, expected the single id [{expected}]")
    if (tokenizer.eos_token_id, tokenizer.pad_token_id) != (0, 0):
        raise ConfigError(f"tokenizer: eos/pad ids are {tokenizer.eos_token_id}/{tokenizer.pad_token_id}, "
                          f"expected 0/0 ({EOS})")
