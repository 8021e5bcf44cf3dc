"""CUDA-graph decoding: the model's one-token step replayed from one captured graph.

A decode step of a many-layer Mamba launches many small kernels; at batch 1 launching them costs more than
running them. ``GraphDecoder`` captures the model's own ``step`` once per batch-size bucket and replays it:

    static buffers per bucket B (1, 2, 4, ... 64, then multiples of 64; a batch of b <= B rows is padded):
        cache     the model's recurrent state, ``allocate_inference_cache(B)``
        tokens    (B,)    the step's input, overwritten by the greedy choice of the next token
        logits    (B, v)  the step's logits
        finished  (B,)    rows that produced an end-of-sequence token (they then receive ``pad``)
        eos_mask  (v,)    which token ids end a row;   pad: () the id finished rows receive
    captured: logits = model.step(tokens, cache) -> greedy choice (-> tokens), in one graph

Greedy decoding therefore never waits on the GPU: tokens are copied out once at the end, and the
all-rows-finished test (one sync) runs every ``check_every`` steps, only when there is an EOS id.
Sampling, repetition penalty and stop strings go through the shared ``generation_loop`` with the
graph's logits. Prefill runs eagerly (``model.prefill``) and its state is copied into the bucket's
buffers; for workloads of a fixed shape, ``TextPrefill`` (``model.prefill`` of token ids) and
``MultimodalPrefill`` (``model.prefill_at_column``: vision encoder + connector + LM prefill) capture the
prefill too, writing the state straight into them. Without CUDA the same static-buffer code runs eagerly.

The decoder works on any model with the protocol of ``infer.loop`` (``prefill``, ``step``,
``generation_vocab_size``, ``allocate_inference_cache``) and plain tensors as parameters; nothing here
imports ``qmamba.models``. Graphs read the weights in place: they are recaptured when a weight moves
(``.to``), changes dtype, or the requested op backend changes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from qmamba.errors import ConfigError, InputError
from qmamba.infer.loop import GenerationConfig, generation_loop
from qmamba.ops import requested_backend
from qmamba.utils.graph_capture import capture

BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket_size(batch: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket holding ``batch`` rows; past the largest, a multiple of it."""
    if batch < 1:
        raise InputError(f"batch size must be >= 1, got {batch}")
    for size in buckets:
        if batch <= size:
            return size
    top = buckets[-1]
    return -(-batch // top) * top


_PROTOCOL = ("prefill", "step", "allocate_inference_cache", "generation_vocab_size", "parameters")


def weights_key(params: list[Tensor]) -> tuple:
    """What replaying a captured graph assumes beyond its inputs: the op backend requested at capture and where
    each weight lives (a move or a dtype change gives a weight new storage, the old one alive while the new one
    is made, so the addresses alone tell)."""
    return requested_backend(), tuple(map(Tensor.data_ptr, params))


def check_decodable(model) -> None:
    """A ``ConfigError`` naming what ``model`` lacks to decode from static buffers."""
    missing = [a for a in _PROTOCOL if not hasattr(model, a)]
    if missing:
        raise ConfigError(f"{type(model).__name__} cannot decode with CUDA graphs: it lacks {missing}; "
                          f"use generate(..., cuda_graph=False)")


def model_device(model) -> torch.device:
    """Where the model's weights live (its first parameter's device)."""
    return next(iter(model.parameters())).device


class Captured:
    """``fn()`` (reading and writing tensors that outlive it) as a CUDA graph, captured after ``warmup``
    eager calls on a side stream; calling replays it and returns what the captured call returned.
    With ``use_graph=False`` (CPU) calling just runs ``fn``."""

    def __init__(self, fn: Callable[[], Any], use_graph: bool, warmup: int = 2, pool=None):
        self.fn, self.graph, self.out = fn, None, None
        if not use_graph:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):  # Triton compiles and autotunes here, cuBLAS picks its kernels
                fn()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.out = capture(self.graph, fn, pool)

    def __call__(self):
        if self.graph is None:
            return self.fn()
        self.graph.replay()
        return self.out


@dataclass
class DecodeSlot:
    """The static buffers of one batch-size bucket and its captured step."""

    size: int  # rows B
    cache: Any  # the LM's cache (MambaCache) for B rows
    tokens: Tensor  # (B,) long
    logits: Tensor  # (B, v_padded)
    finished: Tensor  # (B,) bool
    eos_mask: Tensor  # (v_padded,) bool
    pad: Tensor  # () long
    vocab: int  # logits past it (vocabulary padding) are never chosen
    step: Captured | None = None
    has_eos: bool = False  # whether rows can finish (then the loop tests every check_every steps)
    prefills: dict = field(default_factory=dict)  # shape key -> TextPrefill or MultimodalPrefill

    def row_cache(self, rows: int):
        """The cache of the first ``rows`` rows, as views of the static buffers."""
        return self.cache.first_rows(rows)

    def begin(self, rows: int, cfg: GenerationConfig) -> None:
        """Set the stopping rule of ``cfg``; rows past ``rows`` are padding: finished from the start."""
        self.tokens.zero_()
        self.finished.zero_()
        self.finished[rows:] = True
        self.eos_mask.zero_()
        eos = cfg.eos_ids()
        self.has_eos = bool(eos)
        if eos:
            self.eos_mask[torch.tensor(eos, device=self.eos_mask.device)] = True
        self.pad.fill_(cfg.pad_token_id if cfg.pad_token_id is not None else (eos or [0])[0])


def choose_greedy(slot: DecodeSlot, logits: Tensor) -> Tensor:
    """generation_loop's greedy rule on (B, v) logits, in place: finished rows get ``pad``. Returns tokens."""
    nxt = logits[:, :slot.vocab].argmax(-1)  # (B,)
    nxt = torch.where(slot.finished, slot.pad, nxt)
    slot.finished |= slot.eos_mask[nxt]
    slot.tokens.copy_(nxt)
    return slot.tokens


class GraphDecoder:
    """Greedy (and sampled) decoding of ``model`` from per-bucket static buffers and CUDA graphs.

    ``use_graphs``: capture and replay CUDA graphs (default: when the model is on a CUDA device);
    False runs the same static-buffer step eagerly. ``check_every``: steps between the (synchronising)
    test whether every row has finished. The decoder holds the model weakly.
    """

    def __init__(self, model, buckets: tuple[int, ...] = BUCKETS, use_graphs: bool | None = None,
                 check_every: int = 16, warmup: int = 2):
        check_decodable(model)
        self._model = weakref.ref(model)
        self.buckets, self.check_every, self.warmup = tuple(buckets), check_every, warmup
        self._use_graphs = use_graphs
        self.slots: dict[int, DecodeSlot] = {}
        self._key = None
        self._pool = None

    # ------------------------------------------------------------------ buffers and graphs
    @property
    def model(self):
        model = self._model()
        if model is None:
            raise ConfigError("the model of this GraphDecoder no longer exists")
        return model

    @property
    def use_graphs(self) -> bool:
        if self._use_graphs is not None:
            return self._use_graphs
        return model_device(self.model).type == "cuda"

    @property
    def pool(self):
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool

    def _weights_key(self) -> tuple:
        """What the captured graphs depend on: ``weights_key`` of the model's weights, and whether graphs are on."""
        return weights_key(list(self.model.parameters())), self.use_graphs

    def slot(self, batch: int) -> DecodeSlot:
        """The bucket's buffers for ``batch`` rows, built (and its step captured) on first use."""
        key = self._weights_key()
        if key != self._key:  # weights moved or backend changed: every graph is stale
            self.slots.clear()
            self._key = key
        size = bucket_size(batch, self.buckets)
        if size not in self.slots:
            self.slots[size] = self._build(size)
        return self.slots[size]

    @torch.inference_mode()
    def _build(self, size: int) -> DecodeSlot:
        model = self.model
        dev = model_device(model)
        cache = model.allocate_inference_cache(size, device=dev)
        tokens = torch.zeros(size, dtype=torch.long, device=dev)
        logits = torch.zeros_like(model.step(tokens, cache))  # (B, v_padded): one eager step gives its shape
        v = logits.shape[1]
        slot = DecodeSlot(size, cache, tokens=tokens, logits=logits,
                          finished=torch.zeros(size, dtype=torch.bool, device=dev),
                          eos_mask=torch.zeros(v, dtype=torch.bool, device=dev),
                          pad=torch.zeros((), dtype=torch.long, device=dev),
                          vocab=min(model.generation_vocab_size, v))
        slot.step = Captured(lambda: self._step(slot), self.use_graphs, self.warmup,
                             self.pool if self.use_graphs else None)
        slot.cache.reset()  # the eager and warm-up steps left state behind
        return slot

    def _step(self, slot: DecodeSlot) -> Tensor:
        """One token for every row: tokens -> the model's step -> logits -> greedy tokens (the captured function)."""
        slot.logits.copy_(self.model.step(slot.tokens, slot.cache))  # (B, v)
        return choose_greedy(slot, slot.logits)

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def load(self, logits: Tensor, cache, cfg: GenerationConfig) -> DecodeSlot:
        """Copy a prefill's last logits (b, v) and cache (b rows) into the bucket's static buffers."""
        b = logits.shape[0]
        slot = self.slot(b)
        slot.begin(b, cfg)
        slot.cache.reset()
        slot.cache.load_rows(cache)
        slot.logits.zero_()
        slot.logits[:b].copy_(logits)
        return slot

    @torch.inference_mode()
    def greedy(self, slot: DecodeSlot, rows: int, max_new_tokens: int) -> Tensor:
        """Greedy tokens (rows, n) continuing from the loaded state; slot.logits holds the first logits.
        n <= max_new_tokens: steps after every row finished are cut, as ``generation_loop`` does."""
        out = torch.empty(slot.size, max_new_tokens, dtype=torch.long, device=slot.tokens.device)
        out[:, 0] = choose_greedy(slot, slot.logits)
        check = slot.has_eos
        n = max_new_tokens
        for i in range(1, max_new_tokens):
            if check and i % self.check_every == 0 and bool(slot.finished.all()):
                n = i
                break
            out[:, i] = slot.step()
        return _cut_after_all_finished(out[:rows, :n], slot.eos_mask) if check else out[:rows, :n]

    @torch.inference_mode()
    def multimodal_prefill(self, input_ids: Tensor, pixel_values: Tensor) -> MultimodalPrefill:
        """The captured prefill for this (batch, prompt length, image column, pixel shape), made on first use."""
        if not hasattr(self.model, "prefill_at_column"):
            raise ConfigError(f"{type(self.model).__name__} has no prefill_at_column: not a multimodal model")
        slot = self.slot(input_ids.shape[0])
        key = (input_ids.shape, self.model.image_column(input_ids), pixel_values.shape, pixel_values.dtype)
        if key not in slot.prefills:
            slot.prefills[key] = MultimodalPrefill(self, slot, input_ids, pixel_values)
        return slot.prefills[key]

    @torch.inference_mode()
    def text_prefill(self, input_ids: Tensor) -> TextPrefill:
        """The captured LM prefill for this (batch, prompt length), made on first use; call it with new ids."""
        if input_ids.dim() != 2 or bool((input_ids < 0).any()):
            raise InputError(f"text_prefill takes token ids (batch, length) without image placeholders, got shape "
                             f"{tuple(input_ids.shape)}; use multimodal_prefill for prompts with an image")
        slot = self.slot(input_ids.shape[0])
        key = ("text", input_ids.shape)
        if key not in slot.prefills:
            slot.prefills[key] = TextPrefill(self, slot, input_ids)
        return slot.prefills[key]

    @torch.inference_mode()
    def answer(self, input_ids: Tensor, pixel_values: Tensor, cfg: GenerationConfig | None = None) -> Tensor:
        """Greedy answers (b, n) to unpadded prompts with one image each, through the captured prefill."""
        cfg = cfg or GenerationConfig()
        prefill = self.multimodal_prefill(input_ids, pixel_values)
        prefill.slot.begin(input_ids.shape[0], cfg)
        prefill(input_ids, pixel_values)
        return self.greedy(prefill.slot, input_ids.shape[0], cfg.max_new_tokens)

    def decode_steps(self, slot: DecodeSlot, n: int) -> None:
        """``n`` greedy steps with no host work but the launches (benchmarks)."""
        for _ in range(n):
            slot.step()

    @torch.inference_mode()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, cfg: GenerationConfig | None = None,
                 tokenizer=None, **model_inputs) -> Tensor:
        """Prompt + new tokens (b, l + n), token for token what ``generate(model, ...)`` returns."""
        cfg = cfg or GenerationConfig()
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if cfg.do_sample or cfg.repetition_penalty != 1.0 or cfg.stop_strings:
            stepper = _SlotStepper(self, cfg)
            new = torch.stack(list(generation_loop(stepper, input_ids, attention_mask, cfg, tokenizer,
                                                   **model_inputs)), dim=1)
        else:
            logits, cache = self.model.prefill(input_ids, attention_mask=attention_mask, **model_inputs)
            slot = self.load(logits, cache, cfg)
            del cache
            new = self.greedy(slot, input_ids.shape[0], cfg.max_new_tokens)
        return torch.cat([input_ids, new], dim=1)


def _cut_after_all_finished(tokens: Tensor, eos_mask: Tensor) -> Tensor:
    """tokens (b, n): keep the steps up to the one where the last row produced its first EOS."""
    hit = eos_mask[tokens]  # (b, n)
    if not bool(hit.any(1).all()):
        return tokens
    first = hit.to(torch.uint8).argmax(1)  # (b,) the first EOS of each row
    return tokens[:, :int(first.max()) + 1]


class TextPrefill:
    """``model.prefill`` of unpadded token ids of one shape, as one CUDA graph writing the state into rows [:b]
    of a decode slot: input_ids (b, l) -> slot.logits[:b] (b, v) and the cache. Captured per shape
    (``GraphDecoder.text_prefill``), for workloads of fixed shape; the model's prefill of token ids must not
    synchronise with the host while captured (``MambaLM.prefill`` does not)."""

    def __init__(self, decoder: GraphDecoder, slot: DecodeSlot, input_ids: Tensor):
        self.decoder, self.slot, self.rows = decoder, slot, input_ids.shape[0]
        self.ids = input_ids.clone()  # static input
        self.cache = slot.row_cache(self.rows)
        self.run = Captured(self._prefill, decoder.use_graphs, decoder.warmup,
                            decoder.pool if decoder.use_graphs else None)

    def _model_prefill(self) -> Tensor:
        """The model's prefill of the static inputs into ``self.cache``: last logits (b, v)."""
        return self.decoder.model.prefill(self.ids, cache=self.cache)[0]

    def _prefill(self) -> Tensor:
        self.cache.reset()
        logits = self.slot.logits[:self.rows]
        logits.copy_(self._model_prefill())  # (b, v)
        return logits

    def __call__(self, input_ids: Tensor | None = None) -> Tensor:
        """Copy new ids of the same shape in (None: keep the last ones), run; the last logits (b, v)."""
        if input_ids is not None:
            self.ids.copy_(input_ids)
        return self.run()


class MultimodalPrefill(TextPrefill):
    """``model.prefill_at_column`` (vision encoder + connector + LM prefill) for one fixed shape, as one CUDA
    graph writing the state into rows [:b] of a decode slot:

        input_ids (b, l), one placeholder per row in column i, no padding; pixel_values (b, 3k, S, S)
        -> embeddings [text[:i], visual (q), text[i+1:]] (b, l - 1 + q, d) -> LM -> slot.logits[:b], state

    The same as ``model.prefill`` for such prompts (which needs host syncs to splice any layout).
    """

    def __init__(self, decoder: GraphDecoder, slot: DecodeSlot, input_ids: Tensor, pixel_values: Tensor):
        self.image_index = decoder.model.image_column(input_ids)
        self.pixels = pixel_values.clone()  # static input
        super().__init__(decoder, slot, input_ids)

    def _model_prefill(self) -> Tensor:
        return self.decoder.model.prefill_at_column(self.ids, self.pixels, self.image_index, cache=self.cache)[0]

    def __call__(self, input_ids: Tensor | None = None, pixel_values: Tensor | None = None) -> Tensor:
        """Copy new inputs of the same shape in (None: keep the last ones), run; the last logits (b, v)."""
        if pixel_values is not None:
            self.pixels.copy_(pixel_values)
        return super().__call__(input_ids)


class _SlotStepper:
    """``prefill`` / ``step`` for ``generation_loop`` with the step replayed from a slot."""

    def __init__(self, decoder: GraphDecoder, cfg: GenerationConfig):
        self.decoder, self.cfg = decoder, cfg
        self.generation_vocab_size = decoder.model.generation_vocab_size
        self.slot, self.rows = None, 0

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None, **inputs):
        logits, cache = self.decoder.model.prefill(input_ids, attention_mask=attention_mask, **inputs)
        self.rows = logits.shape[0]
        self.slot = self.decoder.load(logits, cache, GenerationConfig(max_new_tokens=1))
        return logits, self.slot.cache

    def step(self, tokens: Tensor, cache) -> Tensor:
        self.slot.tokens[:self.rows].copy_(tokens)
        self.slot.step()
        return self.slot.logits[:self.rows].clone()


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decoder_for(model) -> GraphDecoder:
    """The model's GraphDecoder, made on first use and kept as long as the model lives."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = GraphDecoder(model)
    return decoder


def release_decoder(model) -> None:
    """Drop the model's GraphDecoder: its static buffers and graphs go back to the allocator."""
    _DECODERS.pop(model, None)


def graphable(model) -> bool:
    """Whether ``model`` can decode from static buffers: the protocol, and plain (not sharded) weights."""
    try:
        check_decodable(model)
    except ConfigError:
        return False
    return all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in model.parameters())


def graph_generate(model, input_ids: Tensor, attention_mask: Tensor | None, cfg: GenerationConfig,
                   tokenizer=None, **model_inputs) -> Tensor:
    """``generate(model, ...)`` through the model's GraphDecoder (the ``cuda_graph=True`` path); models that
    cannot use one (sharded weights, no ``step`` / ``allocate_inference_cache``) take the plain loop."""
    if not graphable(model):
        new = list(generation_loop(model, input_ids, attention_mask, cfg, tokenizer, **model_inputs))
        return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1)
    return decoder_for(model).generate(input_ids, attention_mask, cfg, tokenizer, **model_inputs)


@torch.inference_mode()
def graph_stream(model, input_ids: Tensor, attention_mask: Tensor | None, cfg: GenerationConfig,
                 tokenizer=None, **model_inputs) -> Iterator[Tensor]:
    """``stream(model, ...)`` with the decode steps replayed from the model's GraphDecoder: (b,) tokens per step."""
    stepper = _SlotStepper(decoder_for(model), cfg) if graphable(model) else model
    yield from generation_loop(stepper, input_ids, attention_mask, cfg, tokenizer, **model_inputs)
