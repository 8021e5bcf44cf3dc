"""The generator is a pure function of its seed and settings; evaluation scenes are held out."""

from __future__ import annotations

from pathlib import Path

from synth_oracle import read_json

from qmamba.data.synth import synthesize
from qmamba.data.synth.pipeline import TASKS
from qmamba.data.synth.scene import SceneSpec, sample_scene, scene_rng

TINY = {"n_align": 12, "n_finetune": 12, "n_eval": 8}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    a = _tree(synthesize(tmp_path / "a", seed=3, **TINY).root)
    b = _tree(synthesize(tmp_path / "b", seed=3, workers=2, **TINY).root)
    assert a.keys() == b.keys()
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"{len(differ)} files differ between two runs with seed 3, e.g. {differ[:5]}"
    assert sum(name.endswith(".jpg") for name in a) == 12 + 12 + 6 * 8


def test_other_seed_other_world(tmp_path):
    a = _tree(synthesize(tmp_path / "a", seed=3, **TINY).root)
    b = _tree(synthesize(tmp_path / "b", seed=4, **TINY).root)
    assert a.keys() == b.keys()  # same layout and names
    images = [name for name in a if name.endswith(".jpg")]
    same = [name for name in images if a[name] == b[name]]
    assert len(same) < len(images) // 10, f"{len(same)} of {len(images)} images equal across seeds 3 and 4"
    for name in ("align.json", "finetune.json", "eval/vqav2/v2_mscoco_val2014_annotations.json",
                 "eval/pope/coco/coco_pope_random.json", "eval/mmbench/mmbench_dev_20230712.tsv"):
        assert a[name] != b[name], f"{name} is identical for seeds 3 and 4"


def _signature(scene: dict) -> tuple:
    return tuple(sorted((tuple(o["cell"]), o["color"], o["shape"], o["size"], o["text"]) for o in scene["objects"]))


def test_eval_scenes_are_held_out(world):
    train = {_signature(s) for split in ("align", "finetune") for s in read_json(world.path("scenes", split))}
    assert len(train) > 100
    for task in world.eval_tasks:
        scenes = read_json(world.path("eval", task, "scenes"))
        leaked = [s["image"] for s in scenes if _signature(s) in train]
        assert not leaked, f"{task}: {len(leaked)} evaluation scenes equal a training scene: {leaked[:3]}"


def test_heldout_redraw_is_exercised(tmp_path):
    """A one-object world is small enough that undrawn collisions would happen: none may remain."""
    m = synthesize(tmp_path, seed=0, n_align=300, n_finetune=0, n_eval=30, max_objects=1, text_prob=0.0,
                   eval_sizes={"pope": 1, "textvqa": 1})
    train = {_signature(s) for s in read_json(m.path("scenes", "align"))}
    for task in ("vqav2", "gqa", "vizwiz", "mmbench"):
        scenes = read_json(m.path("eval", task, "scenes"))
        assert all(_signature(s) not in train for s in scenes), task
    # Without the redraw, this stream would have leaked training scenes:
    spec = SceneSpec(max_objects=1, text_prob=0.0)
    naive = [sample_scene(scene_rng(0, TASKS[0].stream, i), spec, f"{i}.png") for i in range(30)]
    assert any(_signature(s.to_dict()) in train for s in naive)


def test_eval_sets_do_not_depend_on_training_sizes(tmp_path):
    a = synthesize(tmp_path / "a", seed=5, n_align=3, n_finetune=3, n_eval=6)
    b = synthesize(tmp_path / "b", seed=5, n_align=40, n_finetune=20, n_eval=6)
    assert _tree(a.root / "eval") == _tree(b.root / "eval")
