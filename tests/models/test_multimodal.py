"""The multimodal model: visual tokens land where they should, stages freeze what they should, a
saved directory reloads with the same outputs, batched generation equals each row alone, and bad
input gets a clear error."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from testing_utils import assert_close, tiny_tokenizer

from qmamba.data.image import MultiImageTransform
from qmamba.data.processor import Processor
from qmamba.errors import CheckpointError, InputError
from qmamba.infer import generate
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import PRESETS, get_preset
from qmamba.models.splice import IMAGE_TOKEN_ID, splice_visual_tokens
from qmamba.pipeline import Pipeline
from qmamba.stages import apply_stage

TINY = [name for name in PRESETS if name.startswith("tiny-")]


def _image(seed: int, size: int = 40) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (size, size + 7, 3), generator=g, dtype=torch.uint8).numpy())


def _model(name="tiny-qmamba-256") -> MultimodalModel:
    model = MultimodalModel(get_preset(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def test_splice_places_tokens_and_labels_by_hand():
    embed = lambda ids: ids[..., None].float().expand(*ids.shape, 2)  # noqa: E731  token id as its embedding
    ids = torch.tensor([[5, IMAGE_TOKEN_ID, 6, 7], [0, 8, IMAGE_TOKEN_ID, 9]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    visual = torch.full((2, 3, 2), -1.0)
    visual[1] = -2.0
    s = splice_visual_tokens(embed, ids, visual, mask, labels=ids.clamp(min=0), padding_side="left")
    assert s.inputs_embeds[:, :, 0].tolist() == [[5, -1, -1, -1, 6, 7], [0, 8, -2, -2, -2, 9]]
    assert s.attention_mask.tolist() == [[1] * 6, [0, 1, 1, 1, 1, 1]]
    assert s.labels.tolist() == [[5, -100, -100, -100, 6, 7], [-100, 8, -100, -100, -100, 9]]
    r = splice_visual_tokens(embed, ids, visual, mask, padding_side="right")
    assert r.inputs_embeds[1, :, 0].tolist() == [8, -2, -2, -2, 9, 0]


def test_splice_counts_images_against_placeholders():
    ids = torch.tensor([[IMAGE_TOKEN_ID, 3, IMAGE_TOKEN_ID]])
    with pytest.raises(InputError, match="2 image placeholder.*row 0: 2.*but 1 image"):
        splice_visual_tokens(lambda i: i[..., None].float(), ids, torch.zeros(1, 4, 1))


@pytest.mark.parametrize("name", TINY)
def test_every_tiny_preset_trains_its_connector_in_align(name):
    model = _model(name).train()
    report = apply_stage(model, "align")
    assert report["vision"][0] == report["llm"][0] == 0 and report["connector"][0] > 0
    tok = tiny_tokenizer()
    proc = Processor(tok, MultiImageTransform(model.vision.config.transforms), image_position=model.config.image_position)
    batch = proc(["what is the colour ?", "describe this image"], [_image(0), _image(1)], padding_side="right")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(**batch, labels=batch["input_ids"].clamp(min=0), padding_side="right")
    n_vis = model.num_visual_tokens
    assert out.logits.shape[1] == batch["input_ids"].shape[1] + n_vis - 1
    out.loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("connector.") for k in changed), sorted(changed)[:5]


def test_finetune_and_full_stages():
    model = _model()
    assert apply_stage(model, "finetune")["llm"][0] > 0 and model.vision.frozen
    apply_stage(model, "full")
    assert not model.vision.frozen and all(p.requires_grad for p in model.parameters())


def test_prefix_layout_puts_visual_tokens_first():
    model = _model("tiny-cobra")
    proc = Processor(tiny_tokenizer(), MultiImageTransform(model.vision.config.transforms), image_position="prefix")
    batch = proc(["<image>\nwhat is this ?"], [_image(2)])
    assert batch["input_ids"][0, 0] == IMAGE_TOKEN_ID and (batch["input_ids"] == IMAGE_TOKEN_ID).sum() == 1
    s = model.embed(batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
    visual = model.encode_images(batch["pixel_values"])
    assert_close(s.inputs_embeds[0, :model.num_visual_tokens], visual[0], 1e-6)


def test_save_load_round_trip_with_processor(tmp_path):
    model, tok = _model(), tiny_tokenizer()
    model.save_pretrained(tmp_path, tokenizer=tok, dtype=torch.float32)
    pipe = Pipeline.from_pretrained(tmp_path, device="cpu")
    proc = Processor(tok, MultiImageTransform(model.vision.config.transforms))
    batch = proc(["what is the shape ?"], [_image(3)])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, pipe.model(**batch).logits)
    answer = pipe.chat("what is the shape ?", image=_image(3), max_new_tokens=5)
    ids = generate(model, **batch, max_new_tokens=5, eos_token_id=tok.eos_token_id)[0, batch["input_ids"].shape[1]:]
    assert answer == tok.decode(ids, skip_special_tokens=True).strip()
    assert "".join(pipe.stream("what is the shape ?", image=_image(3), max_new_tokens=5)).strip() == answer


def test_left_padded_multimodal_batch_generates_like_each_row_alone():
    model, tok = _model(), tiny_tokenizer()
    pipe = Pipeline(model, Processor(tok, MultiImageTransform(model.vision.config.transforms)))
    prompts = ["what is the colour of the circle ?", "how many", "describe"]
    images = [_image(4), None, _image(5)]
    batched = pipe.batch(prompts, images, max_new_tokens=6)
    assert batched == [pipe.chat(p, image=im, max_new_tokens=6) for p, im in zip(prompts, images)]


def test_processor_errors():
    proc = Processor(tiny_tokenizer(), MultiImageTransform(_model().vision.config.transforms))
    with pytest.raises(InputError, match="2 <image> placeholders but one image"):
        proc(["<image> what <image>"], [_image(0)])
    with pytest.raises(InputError, match="no image was given"):
        proc(["<image> what"])
    with pytest.raises(InputError, match="2 prompts but 1 images"):
        proc(["a", "b"], [None])


def test_loading_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        MultimodalModel.from_pretrained(tmp_path / "missing")
    from qmamba import MambaLM
    from qmamba.models.presets import LLM_PRESETS

    MambaLM(LLM_PRESETS["tiny-mamba"]()).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="model_type is None.*MambaLM.from_pretrained"):
        MultimodalModel.from_pretrained(tmp_path)
    (tmp_path / "image.png").write_bytes(b"not an image")
    pipe = Pipeline(_model(), Processor(tiny_tokenizer(), MultiImageTransform(_model().vision.config.transforms)))
    with pytest.raises(InputError, match="image.png"):
        pipe.chat("what ?", image=tmp_path / "image.png")
