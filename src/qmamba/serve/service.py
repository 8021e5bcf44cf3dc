"""The model behind the server: one ``Pipeline`` and one continuous-batching ``Engine`` over its model.

    service = ChatService(Pipeline.from_pretrained(DIR), ServeConfig(model=DIR))
    service.start()                                    # the engine steps on its own thread
    prepared = service.prepare(chat)                   # images, chat template, token ids (blocking: run off the loop)
    gen = service.submit(prepared, chat, loop)         # -> bridge.Generation; APIError(429) when the queue is full

A request's prompt is built exactly as ``Pipeline.chat`` builds it from the same message history
(``Pipeline.conversation_inputs``) and generates with the same defaults (the tokenizer's eos, the template's
end-of-turn marker as a stop string where it is not one token), so a greedy answer here equals ``Pipeline.chat``'s
and ``qmamba generate``'s.

On a GPU the engine's decode step replays one CUDA graph per batch bucket (``infer.bucket_graphs``), captured
for every bucket when the service starts; ``ServeConfig(cuda_graphs=False)`` (``--no-cuda-graphs``) runs
``model.step`` eagerly, as on CPU.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qmamba.errors import QMambaError
from qmamba.infer import Engine, GenerationConfig, QueueFull, Request
from qmamba.infer.bucket_graphs import BucketGraphs
from qmamba.infer.cuda_graph import graphable
from qmamba.infer.image_graphs import BucketEncoder
from qmamba.infer.prefill_graphs import BucketPrefill
from qmamba.pipeline import Pipeline
from qmamba.serve.bridge import Generation
from qmamba.serve.config import ServeConfig
from qmamba.serve.errors import APIError, bad_request
from qmamba.serve.fetch import RemoteLimits
from qmamba.serve.images import ImagePolicy, load_image_part
from qmamba.serve.metrics import Metrics
from qmamba.serve.schema import ChatRequest, ImagePart

ENGINE_COUNTERS = {  # EngineStats field -> what /metrics says of it
    "admissions": "Engine steps that admitted requests.",
    "admitted": "Requests admitted (prefilled).",
    "admit_seconds": "Seconds the engine spent admitting (prefills and first tokens).",
    "decode_steps": "Decode steps of the running batch.",
    "decoded_rows": "Rows advanced by decode steps (one token each).",
    "decode_seconds": "Seconds the engine spent in decode steps.",
}


@dataclass
class Prepared:
    input_ids: Tensor  # (l,) with image placeholders
    pixel_values: Tensor | None  # (n_images, 3k, S, S)
    prompt_tokens: int  # the LM's prompt length: text tokens + each image's visual tokens


class ChatService:
    def __init__(self, pipe: Pipeline, config: ServeConfig):
        self.pipe, self.config = pipe, config
        self.name = config.served_model_name or Path(config.model).name
        self.created = int(time.time())
        tok = pipe.processor.tokenizer
        self.decoder = BucketGraphs(pipe.model, use_graphs=None if config.cuda_graphs and graphable(pipe.model)
                                    else False)
        self.encoder = (BucketEncoder(pipe.model, use_graphs=self.decoder.use_graphs)
                        if hasattr(pipe.model, "encode_images") else None)
        self.prefiller = BucketPrefill(pipe.model) if self.decoder.use_graphs else None
        self.engine = Engine(pipe.model, num_slots=config.num_slots, max_queue=config.max_queue, tokenizer=tok,
                             decode=self.decoder, encode=self.encoder, prefill=self.prefiller,
                             max_prefill_batch=config.max_prefill_batch,
                             max_prefill_tokens=config.max_prefill_tokens, admit_ratio=config.admit_ratio,
                             admit_wait_steps=config.admit_wait_steps)
        remote = (RemoteLimits(config.max_image_bytes, config.remote_timeout, config.remote_max_redirects)
                  if config.allow_remote_images else None)
        local = Path(config.allow_local_files) if config.allow_local_files else None
        self.images = ImagePolicy(config.max_image_bytes, local_dir=local, remote=remote)
        self.metrics = Metrics({
            "qmamba_queue_length": ("Requests waiting for a slot.", lambda: self.engine.num_queued),
            "qmamba_running_requests": ("Requests in the running decode batch.", lambda: self.engine.num_running),
        }, counters={f"qmamba_engine_{key}_total": (what, lambda key=key: getattr(self.engine.stats, key))
                     for key, what in ENGINE_COUNTERS.items()})
        stop = pipe.processor.template.stop
        self.eos_token_id = tok.eos_token_id  # the token an answer ends on, as Pipeline.chat's
        self.template_stops = [stop] if tok.convert_tokens_to_ids(stop) in (None, tok.unk_token_id) else []
        self.max_token_chars = max(map(len, tok.get_vocab()), default=1)  # no token decodes to more characters

        self.running = False

    def start(self) -> None:
        """Capture the decode step of every bucket (with CUDA graphs), then step the engine on its thread."""
        self.decoder.prepare(self.engine.cache, self.engine.num_slots, self.engine.buckets)
        self.engine.start()
        self.running = True

    def stop(self) -> None:
        self.running = False
        self.engine.stop(timeout=30)

    # ------------------------------------------------------------------ one request
    def prepare(self, chat: ChatRequest) -> Prepared:
        """Images loaded and checked, the prompt rendered and tokenized; APIError(400) for what does not fit."""
        self._check_length_early(chat)
        messages = [{"role": m.role, "content": [self._part(p) for p in m.parts]} for m in chat.messages]
        try:  # on the CPU: the engine's thread moves them at admission, so this thread leaves the GPU alone
            inputs = self.pipe.conversation_inputs(messages, None, device=torch.device("cpu"))
        except QMambaError as e:
            raise bad_request(f"{e}", "messages", "invalid_conversation") from None
        ids = inputs["input_ids"][0]  # (l,)
        pixels = inputs.get("pixel_values")
        if pixels is not None and self.pipe.device.type == "cuda":
            pixels = pixels.pin_memory()  # the admission's copy to the GPU then runs without a host sync
        images = int((ids < 0).sum())
        limit = self.config.max_prompt_tokens
        if limit is not None and ids.numel() > limit:
            raise bad_request(f"the prompt is {ids.numel()} tokens (an image counted as one), more than this "
                              f"model's limit of {limit} (--max-prompt-tokens); shorten the conversation",
                              "messages", "context_length_exceeded")
        visual = getattr(self.pipe.model, "num_visual_tokens", 1)
        return Prepared(ids, pixels, ids.numel() + images * (visual - 1))

    def _check_length_early(self, chat: ChatRequest) -> None:
        """Refuse a prompt that is surely too long before tokenizing it (or fetching its images): it has at least
        one token per message and one per ``max_token_chars`` characters."""
        limit = self.config.max_prompt_tokens
        chars = sum(len(p) for m in chat.messages for p in m.parts if isinstance(p, str))
        if limit is not None and max(len(chat.messages), chars // self.max_token_chars) > limit:
            raise bad_request(f"the prompt has {len(chat.messages)} messages and {chars} characters: more than "
                              f"this model's limit of {limit} tokens (--max-prompt-tokens); shorten the "
                              f"conversation", "messages", "context_length_exceeded")

    def _part(self, part) -> dict:
        if isinstance(part, ImagePart):
            return {"type": "image", "image": load_image_part(part, self.images)}
        return {"type": "text", "text": part}

    def settings(self, chat: ChatRequest) -> GenerationConfig:
        """The request's generation settings over the model's defaults (greedy unless a temperature > 0)."""
        tok = self.pipe.processor.tokenizer
        sample = chat.temperature is not None and chat.temperature > 0
        return GenerationConfig(
            max_new_tokens=chat.max_tokens or self.config.default_max_tokens,
            eos_token_id=self.eos_token_id, pad_token_id=tok.pad_token_id,
            stop_strings=(self.template_stops + chat.stop) or None, seed=chat.seed, do_sample=sample,
            temperature=chat.temperature if sample else 1.0, top_k=max(chat.top_k or 0, 0),
            top_p=chat.top_p if chat.top_p is not None else 1.0,
            repetition_penalty=chat.repetition_penalty or 1.0)

    def submit(self, prepared: Prepared, chat: ChatRequest, loop: asyncio.AbstractEventLoop) -> Generation:
        request = Request(prepared.input_ids, prepared.pixel_values, self.settings(chat), self.config.timeout)
        try:
            return Generation.submit(self.engine, request, loop)
        except QueueFull as e:
            self.metrics.outcome("queue_full")
            raise APIError(429, f"the server is busy: {e}", None, "queue_full") from None

    def stops(self, chat: ChatRequest) -> list[str]:
        """The strings the answer's text ends before: the template's end-of-turn marker and the request's."""
        return [self.pipe.processor.template.stop, *chat.stop]
