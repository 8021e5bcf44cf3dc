"""Sharding: shards i::n merged give the unsharded file and metrics; torchrun's RANK/WORLD_SIZE pick the
shard; a missing or incomplete shard stops the merge, naming it."""

from __future__ import annotations

import json

import pytest
from eval_run_utils import MAX_NEW_TOKENS, make_model_dir, read_jsonl, write_task

from qmamba.cli import main
from qmamba.errors import InputError
from qmamba.eval.errors import EvalFileError
from qmamba.eval.runner import run_eval
from qmamba.eval.shards import merge_shards, parse_shard, rank_device, shard_from_env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _argv(model_dir, files, out, *extra):
    return ["eval", "run", "--model", str(model_dir), *files.run_args(), "--out", str(out), "--batch-size", "2",
            "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-progress", *extra]


@pytest.mark.parametrize("task", ["vqav2", "pope"])
def test_two_shards_merged_equal_the_unsharded_run(task, model_dir, tmp_path, capsys):
    files = write_task(task, tmp_path / "data")
    assert main(_argv(model_dir, files, tmp_path / "one")) == 0
    assert main(_argv(model_dir, files, tmp_path / "two", "--shard", "1/2")) == 0
    shard_dir = tmp_path / "two" / task
    assert not (shard_dir / "predictions.jsonl").exists() and "qmamba eval merge" in capsys.readouterr().out
    second = read_jsonl(shard_dir / "predictions.shard-1-of-2.jsonl")
    one = read_jsonl(tmp_path / "one" / task / "predictions.jsonl")
    assert second == one[1::2]
    assert main(_argv(model_dir, files, tmp_path / "two", "--shard", "0/2")) == 0  # the last shard merges
    merged = shard_dir / "predictions.jsonl"
    assert merged.read_bytes() == (tmp_path / "one" / task / "predictions.jsonl").read_bytes()
    metrics = [json.loads((d / task / "metrics.json").read_text()) for d in (tmp_path / "one", tmp_path / "two")]
    assert metrics[0]["metrics"] == metrics[1]["metrics"]
    config = json.loads((shard_dir / "run_config.json").read_text())
    assert config["shards"] == [[0, 2], [1, 2]] and config["counts"]["n_answered"] == len(one)
    merged.unlink()
    assert main(["eval", "merge", str(tmp_path / "two")]) == 0  # explicit merge finds the task folder
    assert merged.read_bytes() == (tmp_path / "one" / task / "predictions.jsonl").read_bytes()


def test_missing_and_incomplete_shards_are_named(model_dir, tmp_path, capsys):
    files = write_task("gqa", tmp_path / "data")
    run = dict(out_dir=tmp_path / "out", max_new_tokens=MAX_NEW_TOKENS, show_progress=False)
    task_dir = run_eval(model_dir, "gqa", files.questions, files.images, shard=(0, 3), **run)
    run_eval(model_dir, "gqa", files.questions, files.images, shard=(2, 3), **run)
    assert main(["eval", "merge", str(tmp_path / "out"), "--task", "gqa"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "predictions.shard-1-of-3.jsonl: shard 1 of 3 is missing" in err
    run_eval(model_dir, "gqa", files.questions, files.images, shard=(1, 3), **run)  # merges
    path = task_dir / "predictions.shard-2-of-3.jsonl"
    path.write_text(path.read_text()[:-5])
    with pytest.raises(EvalFileError, match=r"shard-2-of-3.jsonl: shard 2 of 3 is incomplete \(0 of 1 answers\)"):
        merge_shards(tmp_path / "out")
    pope = write_task("pope", tmp_path / "pope")
    run_eval(model_dir, "pope", pope.questions, pope.images, shard=(0, 2), **run)
    with pytest.raises(EvalFileError, match=r"shard files of several tasks \(gqa, pope\)"):
        merge_shards(tmp_path / "out")


def test_torchrun_environment_picks_the_shard(model_dir, tmp_path, monkeypatch):
    files = write_task("vizwiz", tmp_path / "data")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    task_dir = run_eval(model_dir, "vizwiz", files.questions, files.images, out_dir=tmp_path / "out",
                        max_new_tokens=MAX_NEW_TOKENS, show_progress=False)
    ids = [r["question_id"] for r in read_jsonl(task_dir / "predictions.shard-1-of-2.jsonl")]
    assert ids == ["VizWiz_val_00000001.jpg", "VizWiz_val_00000003.jpg"]
    assert not (task_dir / "predictions.jsonl").exists()
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rank_device(None) == "cuda:1" and rank_device("cpu") == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert shard_from_env() is None and rank_device(None) is None


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard_strings(text):
    with pytest.raises(InputError, match="shard"):
        parse_shard(text)
    assert parse_shard(" 3 / 4 ") == (3, 4)
