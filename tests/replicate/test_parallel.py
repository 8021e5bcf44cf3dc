"""`replicate --jobs N`: the work split over processes. Shards never share a training, the trainings that
preprocessing starts from come first, and the runs give the scores one process gives."""

from __future__ import annotations

import dataclasses
import json

from qmamba.replicate import ReplicateOptions, build_registry, replicate
from qmamba.replicate.driver import _sources, shard_runs
from qmamba.replicate.tiers import TIERS

TINY = dataclasses.replace(TIERS["tiny"], n_align=8, n_finetune=8, n_eval=2, batch_size=2, max_steps=1,
                           checkpoint_every_steps=1, max_new_tokens=4)


def test_shards_split_the_runs_by_training_and_balance_them():
    cells = [c for cells in build_registry(TIERS["tiny"]).values() for c in cells]
    runs = [(seed, c) for seed in (0, 1) for c in cells]
    shards = shard_runs(runs, 3)
    flat = [r for shard in shards for r in shard]
    assert sorted(map(id, flat)) == sorted(map(id, runs)), "every run in exactly one shard"
    owner = {}
    for k, shard in enumerate(shards):
        assert shard == sorted(shard, key=runs.index), "a shard keeps the runs' order (seed by seed)"
        for seed, cell in shard:
            assert owner.setdefault((seed, cell.train.key), k) == k, f"{cell.train.key} seed {seed} in two shards"
    trainings = [len({(seed, c.train.key) for seed, c in shard}) for shard in shards]
    assert max(trainings) - min(trainings) <= 1, trainings
    assert sum(trainings) == len({(seed, c.train.key) for seed, c in runs})


def test_the_trainings_preprocessing_starts_from_are_listed_once_per_seed():
    table1 = {c.variant: c for c in build_registry(TIERS["tiny"])["table1"]}
    runs = [(s, table1[v]) for s in (0, 1) for v in ("qmamba-128", "qmamba-256", "cobra", "vlmamba-bsm")]
    assert [(s, spec.key) for s, spec in _sources(runs)] == [(0, "vlmamba-bsm"), (1, "vlmamba-bsm")]


def test_two_processes_give_the_scores_of_one(tmp_path):
    presets = ["cobra", "qmamba-256"]  # Q-Mamba's preprocessing starts from a trained VL-Mamba BSM
    reports = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        reports[jobs] = replicate(ReplicateOptions(out=str(out), tier=TINY, seeds=1, experiments=["table1"],
                                                   presets=presets, device="cpu", jobs=jobs))
        assert (out / "train/vlmamba-bsm/seed0/1-finetune/DONE").is_file()
    assert sorted(reports[2]["ran"]) == sorted(reports[1]["ran"]) == ["table1/cobra/seed0", "table1/qmamba-256/seed0"]
    for variant in presets:
        scores = [json.loads((tmp_path / f"jobs{j}/runs/table1/{variant}/seed0/result.json").read_text())["scores"]
                  for j in (1, 2)]
        assert scores[0] == scores[1], variant
