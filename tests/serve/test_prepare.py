"""A request is prepared (images, chat template, token ids) on the CPU, off the engine's thread, and moved to the
model's device by the engine when it is admitted: threads other than the engine's never touch the GPU, whose
CUDA-graph captures they would otherwise break or wait behind."""

from __future__ import annotations

import torch
from serve_utils import PROMPT, image, user

from qmamba.pipeline import Pipeline
from qmamba.serve.schema import parse_chat_request
from qmamba.serve.service import ChatService


def test_a_request_is_prepared_on_the_cpu_whatever_the_models_device(pipe, server_config, monkeypatch):
    service = ChatService(pipe, server_config)
    chat = parse_chat_request({"messages": [user(PROMPT, image(3))]}, 100)
    want = pipe.conversation_inputs([{"role": "user", "content": [{"type": "image", "image": image(3)},
                                                                   {"type": "text", "text": PROMPT}]}], None)
    # a model on a device this machine lacks: moving a request there would fail
    monkeypatch.setattr(Pipeline, "device", property(lambda self: torch.device("meta")))
    prepared = service.prepare(chat)
    assert prepared.input_ids.device.type == prepared.pixel_values.device.type == "cpu"
    assert torch.equal(prepared.input_ids, want["input_ids"][0].cpu())
    assert torch.equal(prepared.pixel_values, want["pixel_values"].cpu())
