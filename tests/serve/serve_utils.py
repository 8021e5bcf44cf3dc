"""Helpers of the server's tests: the tiny model directory they serve, test images, OpenAI messages."""

from __future__ import annotations

import base64
import dataclasses
import io

import torch
from PIL import Image
from testing_utils import SPECIAL, tiny_tokenizer

PROMPT = "what is the shape ?"


def build_model_dir(path) -> None:
    """tiny-qmamba-128 with random weights, saved with its tokenizer and processor. The LM head is untied and 0
    on the chat markers and past the tiny vocabulary (answers are words, and may end on the end-of-text token);
    the LM's projections are scaled up so that the image changes the answer (different images, different
    answers: a mix-up between requests shows)."""
    from qmamba.models.multimodal import MultimodalModel
    from qmamba.models.presets import get_preset

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = get_preset("tiny-qmamba-128")
    model = MultimodalModel(dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, tie_embeddings=False))).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.02)
            if name.startswith("llm") and ("in_proj" in name or "out_proj" in name):
                p.mul_(10)
        head = model.llm.lm_head.weight
        head[1:len(SPECIAL)], head[len(tok):] = 0, 0
    model.save_pretrained(path, tokenizer=tok, dtype=torch.float32)


def image(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (40, 47, 3), generator=g, dtype=torch.uint8).numpy())


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def data_url(im: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(im)).decode()


def user(text: str, im: Image.Image | None = None) -> dict:
    """An OpenAI user message: the image part (as a data URL) first, then the text."""
    if im is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(im)}},
                                        {"type": "text", "text": text}]}
