"""Helpers for the runner tests (a plain module with a unique name; conftest.py is not imported from).

``make_model_dir``: a tiny random Q-Mamba saved with a tokenizer that covers its whole vocabulary, so
answers are words, not empty strings. ``write_task``: small question, annotation and image files in each
benchmark's official format. ``write_oracle``: an official-format results file holding the ground truth.
``pipeline_answers``: what ``Pipeline.batch`` answers, one question at a time.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from testing_utils import tiny_tokenizer

from qmamba.eval import TASKS
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset

MAX_NEW_TOKENS = 3
QUESTIONS = ("what is the colour of the circle ?", "how many square are there ?",
             "is the red one left of the blue one ?", "what shape is above the green object ?", "describe this image",
             "is there a circle in the image ?")


def make_model_dir(path: Path) -> Path:
    """A tiny-qmamba-256 with random weights (seed 0) and a word tokenizer filling its 300-token vocabulary.

    Norm weights are scaled by 10: at init every question gets the same answer; scaled, answers differ, so a
    test notices answers given to the wrong question.
    """
    torch.manual_seed(0)
    model = MultimodalModel(get_preset("tiny-qmamba-256")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.mul_(10.0)
    n_extra = model.config.llm.vocab_size - len(tiny_tokenizer())
    model.save_pretrained(path, tokenizer=tiny_tokenizer(tuple(f"w{i}" for i in range(n_extra))))
    return path


def _image(k: int) -> Image.Image:
    return Image.new("RGB", (24 + 9 * k, 20 + 5 * k), ((60 * k) % 256, (200 - 35 * k) % 256, (90 + 40 * k) % 256))


def _save_images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        _image(k).save(folder / name)
    return folder


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@dataclass
class TaskFiles:
    """One task's files; ``truth[k]`` is the ground-truth answer of the k-th question (file order)."""

    task: str
    questions: list[Path]
    annotations: list[Path]
    images: Path | None
    truth: list[str]
    ids: list = field(default_factory=list)  # official ids, for oracle files

    def run_args(self) -> list[str]:
        args = ["--task", self.task, "--questions", *map(str, self.questions), "--annotations",
                *map(str, self.annotations)]
        return args + (["--images", str(self.images)] if self.images else [])


def _vqav2(root: Path, gt: list[str]) -> TaskFiles:
    n = len(gt)
    qs = [{"image_id": k + 1, "question": QUESTIONS[k], "question_id": (k + 1) * 10} for k in range(n)]
    anns = [{"question_id": (k + 1) * 10, "image_id": k + 1, "question_type": "what is", "answer_type": "other",
             "multiple_choice_answer": gt[k],
             "answers": [{"answer": gt[k], "answer_confidence": "yes", "answer_id": j + 1} for j in range(10)]}
            for k in range(n)]
    q = write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", {"data_subtype": "val2014", "questions": qs})
    a = write_json(root / "v2_mscoco_val2014_annotations.json", {"annotations": anns})
    images = _save_images(root / "val2014", [f"COCO_val2014_{k + 1:012d}.jpg" for k in range(n)])
    return TaskFiles("vqav2", [q], [a], images, gt, [(k + 1) * 10 for k in range(n)])


def _gqa(root: Path, gt: list[str]) -> TaskFiles:
    data = {str(201 + k): {"question": QUESTIONS[k], "imageId": f"n{k}", "answer": gt[k], "isBalanced": True,
                           "types": {"structural": "query" if k % 2 else "verify"}} for k in range(len(gt))}
    q = write_json(root / "testdev_balanced_questions.json", data)
    images = _save_images(root / "gqa_images", [f"n{k}.jpg" for k in range(len(gt))])
    return TaskFiles("gqa", [q], [q], images, gt, list(data))


def _vizwiz(root: Path, gt: list[str]) -> TaskFiles:
    names = [f"VizWiz_val_{k:08d}.jpg" for k in range(len(gt))]
    data = [{"image": names[k], "question": QUESTIONS[k], "answer_type": "other", "answerable": 1,
             "answers": [{"answer": gt[k], "answer_confidence": "yes"}] * 10} for k in range(len(gt))]
    q = write_json(root / "val.json", data)
    return TaskFiles("vizwiz", [q], [q], _save_images(root / "vizwiz_val", names), gt, names)


def _textvqa(root: Path, gt: list[str]) -> TaskFiles:
    data = {"data": [{"question_id": 100 + k, "image_id": f"img{k}", "question": QUESTIONS[k], "answers": [gt[k]] * 10,
                      "ocr_tokens": ["red", "blue"] if k % 2 else []} for k in range(len(gt))]}
    q = write_json(root / "TextVQA_0.5.1_val.json", data)
    images = _save_images(root / "train_images", [f"img{k}.jpg" for k in range(len(gt))])
    return TaskFiles("textvqa", [q], [q], images, gt, [100 + k for k in range(len(gt))])


def _pope(root: Path, gt: list[str]) -> TaskFiles:
    half, paths, ids = (len(gt) + 1) // 2, [], []
    for split, labels in (("random", gt[:half]), ("adversarial", gt[half:])):
        recs = [{"question_id": j + 1, "image": f"COCO_val2014_{j:012d}.jpg", "text": QUESTIONS[j],
                 "label": label} for j, label in enumerate(labels)]
        paths.append(write_jsonl(root / f"coco_pope_{split}.json", recs))
        ids += [(split, j + 1) for j in range(len(labels))]
    images = _save_images(root / "pope_val2014", [f"COCO_val2014_{j:012d}.jpg" for j in range(half)])
    return TaskFiles("pope", paths, paths, images, gt, ids)


MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split"]


def _png_base64(k: int) -> str:
    buf = io.BytesIO()
    _image(k).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _mmbench(root: Path, gt: list[str]) -> TaskFiles:
    """Two questions, circular copies: q0 with options (red, blue), q1 with (circle, square, blue)."""
    rows = []
    for g, options, correct in ((0, ["red", "blue"], 0), (1, ["circle", "square", "blue"], 2)):
        for shift in range(len(options)):
            opts = options[shift:] + options[:shift]
            letters = "ABCD"
            rows.append({"index": g + shift * 1000000, "question": QUESTIONS[g], "hint": "nan" if g else "a hint",
                         **{letters[j]: opts[j] if j < len(opts) else "nan" for j in range(4)},
                         "answer": letters[opts.index(options[correct])], "category": f"cat{g}",
                         "image": _png_base64(g + shift), "source": "synth", "l2-category": "attribute_reasoning",
                         "comment": "nan", "split": "dev"})
    lines = ["\t".join(MMBENCH_COLUMNS)] + ["\t".join(str(r[c]) for c in MMBENCH_COLUMNS) for r in rows]
    q = root / "mmbench_dev.tsv"
    q.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return TaskFiles("mmbench", [q], [q], None, [r["answer"] for r in rows], [r["index"] for r in rows])


_BUILDERS = {"vqav2": _vqav2, "gqa": _gqa, "vizwiz": _vizwiz, "textvqa": _textvqa, "pope": _pope, "mmbench": _mmbench}
DEFAULT_TRUTH = {"pope": ["yes", "no", "yes", "no", "no", "yes"], "mmbench": []}


def write_task(task: str, root: Path, truth: list[str] | None = None) -> TaskFiles:
    """Small files of ``task`` in its official format under ``root`` (MMBench ignores ``truth``)."""
    root.mkdir(parents=True, exist_ok=True)
    truth = truth or DEFAULT_TRUTH.get(task) or ["red", "2", "yes", "circle", "blue square"]
    return _BUILDERS[task](root, truth)


def write_oracle(files: TaskFiles, path: Path) -> Path:
    """The ground truth as an official results file of the task."""
    t, ids, truth = files.task, files.ids, files.truth
    if t in ("vqav2", "textvqa"):
        return write_json(path, [{"question_id": i, "answer": a} for i, a in zip(ids, truth)])
    if t == "gqa":
        return write_json(path, [{"questionId": i, "prediction": a} for i, a in zip(ids, truth)])
    if t == "vizwiz":
        return write_json(path, [{"image": i, "answer": a} for i, a in zip(ids, truth)])
    if t == "pope":
        return write_jsonl(path, [{"question_id": i, "text": a.capitalize() + ".", "category": s}
                                  for (s, i), a in zip(ids, truth)])
    path.write_text("index\tprediction\n" + "".join(f"{i}\t{a}\n" for i, a in zip(ids, truth)), encoding="utf-8")
    return path


def load_items(files: TaskFiles):
    qs = files.questions if files.task == "pope" else files.questions[0]
    return TASKS[files.task].load_items(qs)


def item_image(files: TaskFiles, item):
    if files.task == "mmbench":
        from qmamba.eval.tasks.mmbench import load_image

        return load_image(item)
    return files.images / item.image


def pipeline_answers(model_dir: Path, files: TaskFiles, max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict]:
    """[{"question_id", "prompt", "text"}] in question order, from Pipeline.batch one question at a time."""
    from qmamba.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(model_dir)
    out = []
    for item in load_items(files):
        text = pipe.batch([item.prompt], [item_image(files, item)], max_new_tokens=max_new_tokens)[0]
        out.append({"question_id": item.question_id, "prompt": item.prompt, "text": text})
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
