"""The generation settings and the token-by-token loop every decoding path shares.

The model-side protocol (``MambaLM`` and ``MultimodalModel`` implement it; nothing here imports them):

    prefill(input_ids, attention_mask=None, cache=None, **inputs) -> (logits (b, v) at the last position, cache)
    step(tokens (b,), cache) -> logits (b, v)             one token per row, advancing the cache
    generation_vocab_size: int                            logits past it (vocabulary padding) are never chosen
    allocate_inference_cache(batch_size, device=...)      (CUDA-graph decoding: the static cache of a bucket)

The cache is the model's recurrent state: each new token costs O(1) memory. Rows of a batch
are left-padded (``attention_mask`` 0 on padding); a row that finished keeps receiving
``pad_token_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from qmamba.errors import ConfigError, InputError
from qmamba.infer.sampling import SamplingConfig, next_tokens


@dataclass
class GenerationConfig(SamplingConfig):
    max_new_tokens: int = 32
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    stop_strings: list[str] | None = None
    seed: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.stop_strings, str):
            self.stop_strings = [self.stop_strings]

    @classmethod
    def split_kwargs(cls, kwargs: dict) -> tuple[GenerationConfig, dict]:
        """(the generation settings among ``kwargs``, the rest: inputs for the model)."""
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in kwargs.items() if k in names})
        return cfg, {k: v for k, v in kwargs.items() if k not in names}

    def eos_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)


class _StopStrings:
    """Marks rows whose generated text contains one of the stop strings."""

    def __init__(self, stops: list[str] | None, tokenizer):
        if stops and tokenizer is None:
            raise ConfigError("stop_strings need the tokenizer: pass tokenizer=... to generate()")
        self.stops, self.tokenizer = stops or [], tokenizer

    def hit(self, generated: list[Tensor], finished: Tensor) -> Tensor:
        hits = torch.zeros_like(finished)
        if not self.stops:
            return hits
        tokens = torch.stack(generated, dim=1).tolist()  # (b, t)
        for row, ids in enumerate(tokens):
            if not finished[row]:
                text = self.tokenizer.decode(ids)
                hits[row] = any(s in text for s in self.stops)
        return hits


def generation_loop(model, input_ids: Tensor, attention_mask: Tensor | None, cfg: GenerationConfig,
                    tokenizer=None, **model_inputs) -> Iterator[Tensor]:
    """Yield (b,) new tokens, one step at a time, until every row ended or max_new_tokens."""
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    b, device = input_ids.shape[0], input_ids.device
    eos = torch.tensor(cfg.eos_ids(), device=device, dtype=torch.long)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else (cfg.eos_ids() or [0])[0]
    stops = _StopStrings(cfg.stop_strings, tokenizer)
    gen = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.seed is not None else None

    logits, cache = model.prefill(input_ids, attention_mask=attention_mask, **model_inputs)
    vocab = model.generation_vocab_size
    seen = torch.zeros(b, logits.shape[-1], dtype=torch.bool, device=device)
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    real = real & (input_ids >= 0)  # negative ids are placeholders (e.g. an image), not tokens
    seen[torch.arange(b, device=device)[:, None].expand_as(input_ids)[real], input_ids[real]] = True
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    generated: list[Tensor] = []
    for i in range(cfg.max_new_tokens):
        logits = logits.float()
        logits[:, vocab:] = float("-inf")
        tok = torch.where(finished, torch.full_like(finished, pad, dtype=torch.long),
                          next_tokens(logits, seen, cfg, gen))
        seen[torch.arange(b, device=device), tok] |= ~finished
        generated.append(tok)
        yield tok
        finished = finished | torch.isin(tok, eos) | stops.hit(generated, finished)
        if i + 1 == cfg.max_new_tokens or bool(finished.all()):
            return
        logits = model.step(tok, cache)
