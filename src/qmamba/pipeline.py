"""A multimodal model with its processor: ask about an image in one call.

    pipe = Pipeline.from_pretrained("runs/qmamba-micro/model")
    pipe.chat("What colour is the circle?", image="scene.png")   # -> "red"
    for piece in pipe.stream("Describe the image.", image="scene.png"): print(piece, end="")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from qmamba.data.processor import Processor
from qmamba.infer.generate import generate, stream, stream_text
from qmamba.models.multimodal import MultimodalModel
from qmamba.utils.device import resolve_device, resolve_dtype

ImageLike = Image.Image | str | Path | None


class Pipeline:
    def __init__(self, model: MultimodalModel, processor: Processor):
        self.model, self.processor = model, processor

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str | None = None) -> Pipeline:
        dev = resolve_device(device)
        model = MultimodalModel.from_pretrained(path, dtype=resolve_dtype(dtype, dev), device=dev)
        return cls(model, Processor.from_pretrained(path))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _settings(self, gen: dict) -> dict:
        tok = self.processor.tokenizer
        stop = self.processor.template.stop
        defaults = {"max_new_tokens": 128, "eos_token_id": tok.eos_token_id,
                    "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
        if tok.convert_tokens_to_ids(stop) in (None, tok.unk_token_id):
            defaults["stop_strings"] = [stop]  # the end-of-turn marker is text, not one token
        return {**defaults, **gen}

    def _inputs(self, prompts: Sequence[str], images: Sequence[ImageLike]) -> dict:
        batch = self.processor(list(prompts), list(images))
        return {k: v.to(self.device) for k, v in batch.items()}

    def batch(self, prompts: Sequence[str], images: Sequence[ImageLike], **gen) -> list[str]:
        """Answers to several prompts (one image or None each), generated together."""
        inputs = self._inputs(prompts, images)
        out = generate(self.model, **inputs, tokenizer=self.processor.tokenizer, **self._settings(gen))
        new = out[:, inputs["input_ids"].shape[1]:]
        return [self._clean(self.processor.decode(row)) for row in new.tolist()]

    def chat(self, prompt: str, image: ImageLike = None, **gen) -> str:
        return self.batch([prompt], [image], **gen)[0]

    def stream(self, prompt: str, image: ImageLike = None, **gen) -> Iterator[str]:
        inputs = self._inputs([prompt], [image])
        steps = stream(self.model, **inputs, tokenizer=self.processor.tokenizer, **self._settings(gen))
        stop = self.processor.template.stop
        for piece in stream_text(steps, self.processor.tokenizer):
            yield piece.split(stop)[0]
            if stop in piece:
                return

    def _clean(self, text: str) -> str:
        return text.split(self.processor.template.stop)[0].strip()
