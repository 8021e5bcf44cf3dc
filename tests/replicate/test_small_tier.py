"""The small tier: its backbones are looked for when it runs (not when qmamba is imported), its runs draw the
small build's world (harder, varied drawing, a held-out style), and the report puts every cell's scores in the
held-out style beside its in-style ones. Run on CPU with the shipped tiny backbones standing in for a small
build in a cache folder."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

import pytest

import qmamba
import qmamba.micro.sizes
import qmamba.replicate
from qmamba.errors import ConfigError
from qmamba.micro.sizes import CACHE_ENV, SMALL
from qmamba.replicate import ReplicateOptions, replicate
from qmamba.replicate.run import world_settings
from qmamba.replicate.tiers import TIERS, get_tier

TASKS = ("vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench")


def fake_build(root: Path) -> Path:
    """A cache folder whose "small" build is the shipped tiny backbones (linked), finished (build.json)."""
    folder = root / "micro-small"
    folder.mkdir(parents=True)
    assets = Path(qmamba.__file__).parent / "assets" / "micro"
    for name in ("mamba", "siglip"):
        (folder / name).symlink_to(assets / name, target_is_directory=True)
    (folder / "build.json").write_text("{}")
    return folder


def test_importing_the_tiers_reads_no_disk(monkeypatch):
    def fail(*args):
        raise AssertionError("the cache folder was looked at during import")

    monkeypatch.setattr(qmamba.micro.sizes, "is_built", fail)
    monkeypatch.setattr(qmamba.micro.sizes, "cache_dir", fail)
    monkeypatch.delitem(sys.modules, "qmamba.replicate.tiers")
    monkeypatch.setattr(qmamba.replicate, "tiers", qmamba.replicate.tiers)  # put back after the fresh import
    fresh = importlib.import_module("qmamba.replicate.tiers")
    assert fresh.TIERS["small"].cache == "small"


def test_the_small_tier_asks_for_its_build_where_the_cache_is_now(tmp_path, monkeypatch):
    small = get_tier("small")
    for root in (tmp_path / "a", tmp_path / "b"):  # the cache moves after import: the message follows it
        monkeypatch.setenv(CACHE_ENV, str(root))
        with pytest.raises(ConfigError, match="small.*cannot run yet.*micro build --size small") as e:
            small.check()
        assert f"not built in {root / 'micro-small'}:" in str(e.value)
    folder = fake_build(tmp_path / "b")  # built since: the same tier object now runs
    small.check()
    assert small.missing() is None
    resolved = small.resolved()
    assert (resolved.llm, resolved.vision) == (str(folder / "mamba"), str(folder / "siglip"))
    assert resolved.cache is None and resolved.settings()["world"] == SMALL.world


def test_the_tiny_tier_keeps_its_world_and_settings():
    tiny = TIERS["tiny"]
    assert tiny.resolved() is tiny and tiny.heldout_style is None and tiny.missing() is None
    assert world_settings(tiny) == {"n_align": 3000, "n_finetune": 3000, "n_eval": 100, "seed": 0}
    assert "world" not in tiny.settings() and "cache" not in tiny.settings()


def test_a_small_replication_draws_the_small_world_and_reports_the_heldout_style(tmp_path, monkeypatch):
    folder = fake_build(tmp_path / "cache")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    tier = dataclasses.replace(TIERS["small"], n_patches=64, n_align=8, n_finetune=8, n_eval=2, batch_size=2,
                               max_steps=1, checkpoint_every_steps=1, max_new_tokens=4,
                               world={**TIERS["small"].world, "workers": 0})
    out = tmp_path / "rep"
    report = replicate(ReplicateOptions(out=str(out), tier=tier, seeds=1, experiments=["table1"],
                                        presets=["cobra"], device="cpu"))
    assert report["ran"] == ["table1/cobra/seed0"]
    # the small build's world: harder, drawn in the varied style, its evaluation sets also in the held-out style
    config = json.loads((out / "world" / "manifest.json").read_text())["config"]
    for key in ("image_size", "grid", "min_objects", "max_objects", "text_prob", "style"):
        assert config[key] == SMALL.world[key], key
    assert (config["image_size"], config["grid"], config["style"]) == (128, 4, "varied")
    assert sorted(p.name for p in (out / "world" / "eval-light").iterdir()) == sorted(TASKS)
    marker = json.loads((out / "world" / "replicate_world.json").read_text())
    assert marker["heldout_style"] == "light" and "workers" not in marker
    tier_json = json.loads((out / "tier.json").read_text())
    assert tier_json["llm"] == str(folder / "mamba") and tier_json["world"]["style"] == "varied"
    # every run is scored in both styles
    result = json.loads((out / "runs/table1/cobra/seed0/result.json").read_text())
    assert result["heldout_style"] == "light" and set(result["heldout"]["scores"]) == set(TASKS)
    assert (out / "eval/cobra/seed0/style-light/vqav2/metrics.json").is_file()
    assert report["heldout_style"] == "light"
    row = report["cells"]["table1"][0]
    assert set(row["heldout"]["tasks"]) == set(TASKS) and row["heldout"]["seeds"] == [0]
    assert row["heldout"]["tasks"]["gqa"]["mean"] == pytest.approx(result["heldout"]["scores"]["gqa"])
    md = (out / "report.md").read_text()
    assert "Held-out style *light*" in md and md.count("| Cobra (MLP) | 64 |") == 2
