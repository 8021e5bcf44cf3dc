"""Generation as functions of a model: ``generate`` (prompt + new tokens), ``stream`` (new tokens as they
are chosen) and ``stream_text`` (those tokens as text).

    qmamba.generate(model, input_ids, max_new_tokens=32)              # greedy; do_sample, top_k, top_p, ...
    for tok in qmamba.stream(model, input_ids, eos_token_id=0): ...   # (b,) per step

``model`` implements the protocol of ``qmamba.infer.loop`` (``prefill``, ``step``, ``generation_vocab_size``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from qmamba.infer.cuda_graph import graph_generate, graph_stream
from qmamba.infer.loop import GenerationConfig, generation_loop


def _use_graph(input_ids: Tensor, cuda_graph: bool | None) -> bool:
    return input_ids.is_cuda if cuda_graph is None else cuda_graph


@torch.inference_mode()
def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, tokenizer=None,
             cuda_graph: bool | None = None, **kwargs) -> Tensor:
    """Prompt + new tokens, (b, l + n). Settings: see ``GenerationConfig``; the rest go to ``model.prefill``
    (e.g. ``pixel_values``). ``cuda_graph``: decode from static buffers with CUDA graphs (``infer.cuda_graph``;
    default: when ``input_ids`` are on a GPU). ``tokenizer``: needed by ``stop_strings``."""
    cfg, model_inputs = GenerationConfig.split_kwargs(kwargs)
    if _use_graph(input_ids, cuda_graph):
        return graph_generate(model, input_ids, attention_mask, cfg, tokenizer, **model_inputs)
    new = list(generation_loop(model, input_ids, attention_mask, cfg, tokenizer, **model_inputs))
    return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1)


@torch.inference_mode()
def stream(model, input_ids: Tensor, attention_mask: Tensor | None = None, tokenizer=None,
           cuda_graph: bool | None = None, **kwargs) -> Iterator[Tensor]:
    """Yield each step's new tokens (b,) as soon as it is chosen (arguments as in ``generate``)."""
    cfg, model_inputs = GenerationConfig.split_kwargs(kwargs)
    if _use_graph(input_ids, cuda_graph):
        yield from graph_stream(model, input_ids, attention_mask, cfg, tokenizer, **model_inputs)
        return
    yield from generation_loop(model, input_ids, attention_mask, cfg, tokenizer, **model_inputs)


def stream_text(token_steps: Iterator[Tensor], tokenizer, skip_special_tokens: bool = True) -> Iterator[str]:
    """Turn a batch-1 token stream into text pieces (complete characters only)."""
    ids: list[int] = []
    shown = ""
    for tok in token_steps:
        ids.append(int(tok[0]))
        text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
            continue
        if len(text) > len(shown):
            yield text[len(shown):]
        shown = text
