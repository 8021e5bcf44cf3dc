"""Pipeline.chat with a message history: the answer equals the one for the same prompt written out by hand (and
rendered by the saved Jinja template); bad histories get a clear error."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from testing_utils import SPECIAL, tiny_tokenizer

from qmamba.chat_templates import get_template, jinja_template
from qmamba.data.image import MultiImageTransform
from qmamba.data.processor import Processor
from qmamba.errors import InputError
from qmamba.infer import generate
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.pipeline import Pipeline

HISTORY = [{"role": "user", "content": "what is the shape ?"}, {"role": "assistant", "content": "a red circle"},
           {"role": "user", "content": "how many ?"}, {"role": "assistant", "content": "one"},
           {"role": "user", "content": "what colour is the square ?"}]
BY_HAND = ("<|user|>\n<image>\nwhat is the shape ?<|endoftext|>\n<|assistant|>\na red circle<|endoftext|>"
           "\n<|user|>\nhow many ?<|endoftext|>\n<|assistant|>\none<|endoftext|>"
           "\n<|user|>\nwhat colour is the square ?<|endoftext|>\n<|assistant|>\n")


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = MultimodalModel(get_preset("tiny-qmamba-128")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        head = model.llm.lm_head.weight.detach().clone()  # untied from the embedding, so that
        head[:len(SPECIAL)], head[len(tok):] = 0, 0  # logits are 0 on the markers and past the tiny vocabulary:
        model.llm.lm_head.weight = torch.nn.Parameter(head)  # answers are words
    return Pipeline(model, Processor(tok, MultiImageTransform(model.vision.config.transforms)))


def _image(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (40, 47, 3), generator=g, dtype=torch.uint8).numpy())


def test_chat_with_history_equals_the_prompt_written_by_hand(pipe):
    image, tok = _image(1), pipe.processor.tokenizer
    batch = pipe.processor([BY_HAND], [image], chat=False)
    inputs = pipe.conversation_inputs(HISTORY, image)
    assert torch.equal(inputs["input_ids"], batch["input_ids"]) and torch.equal(inputs["pixel_values"],
                                                                                 batch["pixel_values"])
    out = generate(pipe.model, **batch, max_new_tokens=6, eos_token_id=tok.eos_token_id)
    want = tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert pipe.chat(HISTORY, image=image, max_new_tokens=6) == want
    parts = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": HISTORY[0][
        "content"]}]}, *HISTORY[1:]]
    assert pipe.chat(parts, max_new_tokens=6) == want  # the image as a part of the first turn
    assert "".join(pipe.stream(HISTORY, image=image, max_new_tokens=6)).strip() == want
    tok.chat_template = jinja_template(get_template("zephyr"))  # the template a saved directory carries
    assert tok.apply_chat_template([{**parts[0], "content": [{"type": "image"}, parts[0]["content"][1]]},
                                    *HISTORY[1:]], tokenize=False) == BY_HAND


def test_one_turn_history_equals_a_plain_prompt(pipe):
    image = _image(2)
    assert (pipe.chat([{"role": "user", "content": "describe this object"}], image=image, max_new_tokens=5)
            == pipe.chat("describe this object", image=image, max_new_tokens=5))


@pytest.mark.parametrize("messages,image,match", [
    ([], None, "empty"),
    ([{"role": "system", "content": "x"}, {"role": "user", "content": "what"}], None, "role 'system'"),
    (HISTORY[:2], None, "ends with a 'assistant'"),
    ([{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "what"}]}],
     "b.png", "2 image"),
    ([{"role": "user", "content": "<image> what"}], None, "1 <image> placeholder.* and 0 image"),
    ([{"role": "user", "content": 3}], None, "string or a list of parts"),
])
def test_bad_histories(pipe, messages, image, match):
    with pytest.raises(InputError, match=match):
        pipe.chat(messages, image=image)
