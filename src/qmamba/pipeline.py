"""A multimodal model with its processor: ask about an image in one call.

    pipe = Pipeline.from_pretrained("runs/qmamba-micro/model")
    pipe.chat("What colour is the circle?", image="scene.png")   # -> "red"
    pipe.chat([{"role": "user", "content": "What colour is the circle?"}, {"role": "assistant", "content": "red"},
               {"role": "user", "content": "And the square?"}], image="scene.png")   # the image: first user turn
    for piece in pipe.stream("Describe the image.", image="scene.png"): print(piece, end="")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from qmamba.data.chat import IMAGE_PLACEHOLDER
from qmamba.data.image import load_image
from qmamba.data.processor import Processor, pad_rows
from qmamba.errors import InputError
from qmamba.infer.generate import generate, stream, stream_text
from qmamba.models.multimodal import MultimodalModel
from qmamba.utils.device import resolve_device, resolve_dtype

ImageLike = Image.Image | str | Path | None
Message = dict  # {"role": "user" | "assistant", "content": str | [{"type": "text", "text": ...} | {"type": "image"}]}
Prompt = str | Sequence[Message]  # one user message, or a conversation ending with a user message


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

    def _inputs(self, prompts: Sequence[str], images: Sequence[ImageLike], pixel_values=None) -> dict:
        batch = self.processor(list(prompts), list(images), pixel_values=pixel_values)
        return {k: v.to(self.device) for k, v in batch.items()}

    def batch(self, prompts: Sequence[str], images: Sequence[ImageLike], pixel_values=None, **gen) -> list[str]:
        """Answers to several prompts (one image or None each), generated together; ``pixel_values``: the
        images already preprocessed (``data.prefetch``)."""
        inputs = self._inputs(prompts, images, pixel_values)
        out = generate(self.model, **inputs, tokenizer=self.processor.tokenizer, **self._settings(gen))
        new = out[:, inputs["input_ids"].shape[1]:]
        return [self._clean(self.processor.decode(row)) for row in new.tolist()]

    def chat(self, prompt: Prompt, image: ImageLike = None, **gen) -> str:
        """The answer to one user message, or to a conversation (see ``conversation``) whose last turn is the
        user's; ``image`` goes with the first user turn."""
        if isinstance(prompt, str):
            return self.batch([prompt], [image], **gen)[0]
        inputs = self.conversation_inputs(prompt, image)
        out = generate(self.model, **inputs, tokenizer=self.processor.tokenizer, **self._settings(gen))
        return self._clean(self.processor.decode(out[0, inputs["input_ids"].shape[1]:].tolist()))

    def stream(self, prompt: Prompt, image: ImageLike = None, **gen) -> Iterator[str]:
        """``chat``'s answer as text pieces, as they are generated."""
        inputs = (self._inputs([prompt], [image]) if isinstance(prompt, str)
                  else self.conversation_inputs(prompt, image))
        steps = stream(self.model, **inputs, tokenizer=self.processor.tokenizer, **self._settings(gen))
        stop = self.processor.template.stop
        for piece in stream_text(steps, self.processor.tokenizer):
            yield piece.split(stop)[0]
            if stop in piece:
                return

    def conversation_inputs(self, messages: Sequence[Message], image: ImageLike, device=None) -> dict:
        """Model inputs (a batch of one: input_ids and attention_mask (1, l), pixel_values (1, 3k, S, S) with an
        image) for a conversation: the chat template over every turn, the image's placeholder where its turn
        has it. What ``chat`` generates from, and what a server submits to ``qmamba.infer.Engine``. On the
        model's device unless ``device`` says otherwise."""
        turns, images = conversation(messages, image)
        if images and self.processor.transform is None:
            raise InputError("this model has no vision encoder; it cannot take images")
        (_, last), history = turns[-1], turns[:-1]
        ids = self.processor.prompt_ids(last, has_image=IMAGE_PLACEHOLDER in last, history=history)
        batch = pad_rows([ids], self.processor.tokenizer.pad_token_id or 0)
        if images:
            batch["pixel_values"] = self.processor.transform(
                [load_image(im) if isinstance(im, (str, Path)) else im for im in images])
        return {k: v.to(self.device if device is None else device) for k, v in batch.items()}

    def _clean(self, text: str) -> str:
        return text.split(self.processor.template.stop)[0].strip()


def conversation(messages: Sequence[Message], image: ImageLike = None) -> tuple[list[tuple[str, str]], list]:
    """A message history -> ((role, text) turns for the chat template, the images in order).

    A message's content is a string, or a list of parts as in transformers' chat templates:
    ``{"type": "text", "text": ...}`` and ``{"type": "image", "image": PIL image or path}`` (the image becomes
    ``<image>\\n`` where the part stands, as the saved Jinja template renders it). ``image`` belongs to the
    first user turn (its placeholder is put first unless that turn's text holds one). The last message is the
    user's; the model takes one image."""
    if not messages:
        raise InputError("the conversation is empty; give at least one user message")
    turns, images = [], []
    for i, msg in enumerate(messages):
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "assistant"):
            raise InputError(f"message {i} has role {role!r}; expected 'user' or 'assistant'")
        text, found = _message_text(content, i)
        images += found
        if image is not None and role == "user" and not any(r == "user" for r, _ in turns):
            text = text if IMAGE_PLACEHOLDER in text else f"{IMAGE_PLACEHOLDER}\n{text}"
            images.insert(0, image)
        turns.append((role, text))
    if turns[-1][0] != "user":
        raise InputError(f"the conversation ends with a {turns[-1][0]!r} message; the last one must be the user's")
    placeholders = sum(text.count(IMAGE_PLACEHOLDER) for _, text in turns)
    if placeholders != len(images) or len(images) > 1:
        raise InputError(f"the conversation has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) and "
                         f"{len(images)} image(s); this model takes one image, in one user turn")
    return turns, images


def _message_text(content, index: int) -> tuple[str, list]:
    """A message's text (image parts as placeholders) and its images."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, (list, tuple)):
        raise InputError(f"message {index}: content must be a string or a list of parts, "
                         f"got {type(content).__name__}")
    text, images = "", []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text += part["text"]
        elif kind == "image" and part.get("image") is not None:
            text += f"{IMAGE_PLACEHOLDER}\n"
            images.append(part["image"])
        else:
            raise InputError(f"message {index}: part {part!r}; expected {{'type': 'text', 'text': ...}} or "
                             f"{{'type': 'image', 'image': an image or path}}")
    return text, images
