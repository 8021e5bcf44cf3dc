"""The backbones record of a replication's runs: a fingerprint that follows the weights' bytes, the build's gates,
the report's count of distinct builds; and a world whose marker came without its files is made again."""

from __future__ import annotations

import dataclasses
import json

from qmamba.data.synth.manifest import MANIFEST
from qmamba.replicate.backbones import backbones_record, builds_summary, fingerprint
from qmamba.replicate.report import backbones_lines
from qmamba.replicate.run import ensure_world, world_settings
from qmamba.replicate.tiers import TIERS


def folders(tmp_path):
    llm, vision = tmp_path / "build" / "mamba", tmp_path / "build" / "siglip"
    for d in (llm, vision):
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(bytes(range(64)))
        (d / "config.json").write_text("{}")
    return llm, vision


def test_the_fingerprint_follows_the_weights_bytes_and_only_them(tmp_path):
    llm, vision = folders(tmp_path)
    first = fingerprint((llm, vision))
    (llm / "config.json").write_text('{"other": 1}')  # not a weight file
    assert fingerprint((llm, vision)) == first
    (vision / "model.safetensors").write_bytes(bytes(range(1, 65)))
    assert fingerprint((llm, vision)) != first
    assert len(first) == 12 and int(first, 16) >= 0


def test_the_record_carries_the_builds_seed_and_gates(tmp_path):
    llm, vision = folders(tmp_path)
    gates = {"figures": {"lm_grounded": 0.97}, "targets": {"lm_grounded": 0.95}, "all_passed": True}
    (llm.parent / "build.json").write_text(json.dumps({"seed": 3, "gates": gates, "device": "cuda"}))
    rec = backbones_record(str(llm), str(vision))
    assert rec == {"fingerprint": fingerprint((llm, vision)), "seed": 3, "gates": gates}


def test_the_report_counts_distinct_builds():
    gates = {"figures": {"lm_grounded": 0.97, "probe_shape": 0.5}}
    builds = builds_summary([{"fingerprint": "a", "gates": gates}, {"fingerprint": "b"}, {"fingerprint": "a"}, None])
    assert builds == [{"fingerprint": "a", "runs": 2, "gates": gates}, {"fingerprint": "b", "runs": 1},
                      {"fingerprint": "unknown", "runs": 1}]
    lines = backbones_lines(builds)
    assert lines[0].startswith("The runs were trained on 3 build(s)") and "scores may differ" in lines[0]
    assert lines[1] == "- `a`: 2 run(s); build gates: lm_grounded 97.0%, probe_shape 50.0%"


def test_a_world_marker_without_its_world_is_made_again(tmp_path):
    tier = dataclasses.replace(TIERS["tiny"], n_align=4, n_finetune=4, n_eval=2)
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "replicate_world.json").write_text(json.dumps(world_settings(tier)))
    world = ensure_world(tmp_path, tier)
    assert (tmp_path / "world" / MANIFEST).is_file()
    assert world.counts and ensure_world(tmp_path, tier).counts == world.counts
