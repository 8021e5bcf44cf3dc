"""Collation by hand: right padding, -100 labels on padding, images stacked in row order, bad samples
listed, target tokens counted after the shift; and a collated batch goes through the tiny models."""

from __future__ import annotations

import pytest
import torch
from testing_utils import assert_close, tiny_tokenizer
from traindata_utils import IGN, IMG, convo, write_image, write_json

from qmamba.data.collate import collate, with_image_row
from qmamba.data.dataset import ConversationDataset
from qmamba.data.image import MultiImageTransform
from qmamba.errors import InputError
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset

PAD = 9


def _sample(ids, labels, pixels=None, rid="r"):
    return {"input_ids": ids, "labels": labels, "pixel_values": pixels, "id": rid, "source": "f.json"}


def test_collate_pads_right_and_counts_shifted_targets_by_hand():
    p1, p2 = torch.full((3, 2, 2), 1.0), torch.full((3, 2, 2), 2.0)
    samples = [
        _sample([IMG, 5, 6, 7], [IGN, IGN, 6, 7], p1, "a"),
        {"bad": "image x.png: the file does not exist", "id": "b", "source": "f.json"},
        _sample([4, 5], [4, 5], None, "c"),  # label at position 0 predicts nothing: not counted
        _sample([IMG, 8, 3], [IGN, 8, 3], p2, "d"),
    ]
    batch = collate(samples, pad_token_id=PAD)
    assert batch["input_ids"].tolist() == [[IMG, 5, 6, 7], [4, 5, PAD, PAD], [IMG, 8, 3, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[IGN, IGN, 6, 7], [4, 5, IGN, IGN], [IGN, 8, 3, IGN]]
    assert batch["n_target_tokens"] == 2 + 1 + 2
    assert torch.equal(batch["pixel_values"], torch.stack([p1, p2]))
    assert batch["bad"] == [("f.json", "b", "image x.png: the file does not exist")]
    assert batch["ids"] == [("f.json", "a"), ("f.json", "c"), ("f.json", "d")]
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long


def test_collate_without_images_has_no_pixel_values_and_all_bad_gives_an_empty_batch():
    batch = collate([_sample([4, 5, 6], [4, 5, 6])], pad_token_id=PAD)
    assert "pixel_values" not in batch and batch["n_target_tokens"] == 2
    empty = collate([{"bad": "x", "id": "a", "source": "f"}], pad_token_id=PAD)
    assert empty["input_ids"].shape == (0, 0) and empty["n_target_tokens"] == 0
    assert empty["bad"] == [("f", "a", "x")] and "pixel_values" not in empty


def test_collate_rejects_mismatched_rows():
    with pytest.raises(InputError, match="f.json record r: 3 input_ids but 2 labels"):
        collate([_sample([1, 2, 3], [1, 2])], pad_token_id=PAD)


@pytest.mark.parametrize("preset", ["tiny-qmamba-256", "tiny-cobra"])
@pytest.mark.parametrize("stage", ["align", "finetune"])
def test_collated_batch_trains_the_tiny_model(tmp_path, preset, stage):
    model = MultimodalModel(get_preset(preset))
    tok = tiny_tokenizer()
    for k in range(2):
        write_image(tmp_path / f"{k}.png", seed=k, size=(40, 30))
    records = [convo("<image>\nwhat is this?", "a red circle.", "how many?", "one.", image="0.png"),
               convo("how many?", "two."), convo("describe this <image>", "a blue square left.", image="1.png")]
    ds = ConversationDataset([write_json(tmp_path / "d.json", records)], tok, MultiImageTransform(model.vision.config.transforms),
                             image_position=model.config.image_position, stage=stage)
    batch = collate([ds[i] for i in range(len(ds))], tok.pad_token_id)
    out = model(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], labels=batch["labels"])
    assert out.n_target_tokens == batch["n_target_tokens"] > 0
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_with_image_row_by_hand():
    batch = collate([_sample([4, 5, 6], [4, 5, 6])], pad_token_id=PAD)
    out = with_image_row(batch, (3, 2, 2), PAD)
    assert out["input_ids"].tolist() == [[4, 5, 6], [IMG, PAD, PAD]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[4, 5, 6], [IGN] * 3]
    assert out["pixel_values"].shape == (1, 3, 2, 2) and out["dummy_rows"] == 1
    assert out["n_target_tokens"] == batch["n_target_tokens"]
    empty = with_image_row(collate([{"bad": "x", "id": "a", "source": "f"}], PAD), (3, 2, 2), PAD)
    assert empty["input_ids"].tolist() == [[IMG]] and empty["labels"].tolist() == [[IGN]]
    has = collate([_sample([IMG, 5], [IGN, 5], torch.zeros(3, 2, 2))], PAD)
    assert with_image_row(has, (3, 2, 2), PAD)["input_ids"].shape == (1, 2)


def test_the_image_row_changes_no_loss_and_no_gradient_of_the_llm(tmp_path):
    model = MultimodalModel(get_preset("tiny-qmamba-256"))
    tok = tiny_tokenizer()
    ds = ConversationDataset([write_json(tmp_path / "d.json", [convo("how many?", "two."), convo("what?", "one.")])],
                             tok, MultiImageTransform(model.vision.config.transforms))
    batch = collate([ds[0], ds[1]], tok.pad_token_id)
    shape = (ds.transform.num_channels, ds.transform.image_size, ds.transform.image_size)
    losses, grads = [], []
    for b in (batch, with_image_row(batch, shape, tok.pad_token_id)):
        model.zero_grad()
        out = model(b["input_ids"], b.get("pixel_values"), b["attention_mask"], labels=b["labels"],
                    padding_side="right", reduction="sum")
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.llm.parameters()]))
        assert out.n_target_tokens == batch["n_target_tokens"]
    assert_close(losses[1], losses[0], 1e-6, "loss with the image row")
    assert_close(grads[1], grads[0], 1e-5, "LLM gradients with the image row")
    empty = with_image_row(collate([{"bad": "x", "id": "a", "source": "f"}], tok.pad_token_id), shape, tok.pad_token_id)
    out = model(empty["input_ids"], empty["pixel_values"], empty["attention_mask"], labels=empty["labels"],
                padding_side="right", reduction="sum")
    assert out.n_target_tokens == 0 and float(out.loss.detach()) == 0.0
