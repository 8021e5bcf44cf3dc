"""The dataset: bad images and records become bad samples (also inside DataLoader workers), files mix
by weight, and misconfiguration fails at construction with the fix."""

from __future__ import annotations

import functools
from collections import Counter

import pytest
from testing_utils import tiny_tokenizer
from torch.utils.data import DataLoader
from traindata_utils import convo, transform, write_image, write_json, write_jsonl

from qmamba.data.collate import collate
from qmamba.data.dataset import ConversationDataset, DataSource, draw_records
from qmamba.errors import ConfigError, InputError


def _world(tmp_path):
    """Six image records (two with broken images), two text-only records, one malformed record."""
    images = tmp_path / "images"
    for k in range(4):
        write_image(images / f"{k}.png", seed=k)
    (images / "corrupt.png").write_bytes(b"this is not a png")
    good = (images / "0.png").read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 2])
    records = [convo("<image>\nwhat is this?", "a red circle.", image=f"{k}.png", rid=f"img{k}") for k in range(4)]
    records += [convo("<image> what?", "a.", image=name, rid=name) for name in ("corrupt.png", "truncated.png")]
    records += [convo("how many?", "two.", rid="t0"), convo("how many?", "three.", rid="t1")]
    records += [convo("<image> what?", "a.", image="missing.png", rid="missing.png")]
    records += [convo("what?", rid="no-reply")]
    return write_json(tmp_path / "mix.json", records), images


def test_missing_and_corrupt_images_are_bad_samples_not_exceptions(tmp_path):
    path, images = _world(tmp_path)
    ds = ConversationDataset([DataSource(path, image_root=images)], tiny_tokenizer(), transform())
    assert len(ds) == 9 and ds.n_records == 10
    assert [(b.source, b.id) for b in ds.bad_records] == [(str(path), "no-reply")]
    samples = {s["id"]: s for s in (ds[i] for i in range(len(ds)))}
    assert samples["missing.png"]["bad"].startswith(f"image {images / 'missing.png'}: the file does not exist")
    assert "not an image file" in samples["corrupt.png"]["bad"]
    assert "corrupt or truncated" in samples["truncated.png"]["bad"]
    assert all(samples[f"img{k}"]["pixel_values"] is not None for k in range(4))
    assert {s["source"] for s in samples.values()} == {str(path)}


def test_bad_samples_pass_through_dataloader_workers(tmp_path):
    path, images = _world(tmp_path)
    tok = tiny_tokenizer()
    ds = ConversationDataset([DataSource(path, image_root=images)], tok, transform())
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False,
                        collate_fn=functools.partial(collate, pad_token_id=tok.pad_token_id))
    batches = list(loader)
    bad = sorted(b[1] for batch in batches for b in batch["bad"])
    assert bad == ["corrupt.png", "missing.png", "truncated.png"]
    kept = [i for batch in batches for _, i in batch["ids"]]
    assert sorted(kept) == ["img0", "img1", "img2", "img3", "t0", "t1"]
    for batch in batches:
        n_img = sum(1 for _, i in batch["ids"] if i.startswith("img"))
        assert (batch["input_ids"] == -200).sum() == n_img
        assert (batch["pixel_values"].shape[0] if "pixel_values" in batch else 0) == n_img


def test_image_root_defaults_to_the_files_folder(tmp_path):
    write_image(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "d.jsonl", [convo("<image> what?", "a.", image="a.png")])
    assert ConversationDataset([str(path)], tiny_tokenizer(), transform())[0]["pixel_values"] is not None


def _numbered(tmp_path, name: str, n: int):
    return write_json(tmp_path / f"{name}.json", [convo("how many?", "two.", rid=f"{name}{k}") for k in range(n)])


def test_weights_repeat_whole_files_and_draw_a_fixed_subset_for_fractions(tmp_path):
    a, b, c = _numbered(tmp_path, "a", 10), _numbered(tmp_path, "b", 8), _numbered(tmp_path, "c", 5)
    sources = [DataSource(a, weight=2), DataSource(b, weight=0.5), DataSource(c, weight=1.4)]
    ds = ConversationDataset(sources, tiny_tokenizer(), stage="align", seed=3)
    assert len(ds) == 20 + 4 + 7 and ds.items_per_source == {"a": 20, "b": 4, "c": 7}
    counts = Counter(ds[i]["id"] for i in range(len(ds)))
    assert all(counts[f"a{k}"] == 2 for k in range(10))
    drawn_b = {k for k in range(8) if counts[f"b{k}"]}
    assert len(drawn_b) == 4 and all(counts[f"b{k}"] == 1 for k in drawn_b)
    assert sorted(counts[f"c{k}"] for k in range(5)) == [1, 1, 1, 2, 2]
    again = ConversationDataset(sources, tiny_tokenizer(), stage="align", seed=3)
    assert [again[i]["id"] for i in range(len(again))] == [ds[i]["id"] for i in range(len(ds))]
    subsets = {tuple(draw_records(8, 0.5, seed, "b")) for seed in range(6)}
    assert len(subsets) > 1  # the seed picks the subset


def test_weight_zero_leaves_a_source_out(tmp_path):
    a, b = _numbered(tmp_path, "a", 3), _numbered(tmp_path, "b", 4)
    ds = ConversationDataset([DataSource(a), DataSource(b, weight=0)], tiny_tokenizer(), stage="align")
    assert len(ds) == 3 and ds.items_per_source == {"a": 3, "b": 0}


@pytest.mark.parametrize("kwargs, match", [
    ({"stage": "pretrain"}, "stage='pretrain'"),
    ({"image_position": "suffix"}, "image_position='suffix'"),
    ({"max_length": 1}, "max_length=1"),
    ({"chat_template": "llama"}, "chat_template='llama'"),
])
def test_bad_options_raise_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ConversationDataset([_numbered(tmp_path, "a", 2)], tiny_tokenizer(), **kwargs)


def test_misconfigured_sources_fail_at_construction(tmp_path):
    a = _numbered(tmp_path, "a", 2)
    with pytest.raises(ConfigError, match="weight=-1"):
        DataSource(a, weight=-1)
    with pytest.raises(ConfigError, match="named 'a'; give each a distinct name"):
        ConversationDataset([DataSource(a), DataSource(a)], tiny_tokenizer())
    img = write_json(tmp_path / "img.json", [convo("<image> what?", "a.", image="a.png")])
    with pytest.raises(ConfigError, match="no image transform"):
        ConversationDataset([img], tiny_tokenizer())
    with pytest.raises(InputError, match=f"{tmp_path / 'nope.json'}: the file does not exist"):
        ConversationDataset([tmp_path / "nope.json"], tiny_tokenizer())
    bad = write_json(tmp_path / "bad.json", [convo("what?", rid="x")])
    with pytest.raises(InputError, match="no usable training records.*bad.json record x: no assistant"):
        ConversationDataset([bad], tiny_tokenizer())
