"""The whole paper pipeline at micro scale, in one call: generate the micro-world, take qmamba's shipped
micro backbones (a SigLIP-architecture encoder and a Mamba LM), train a micro Q-Mamba MLLM (align, then
finetune), score it on the six micro-benchmarks with the same code as the real ones, and answer a
question about a sample image.

    qmamba quickstart                 # about 6 minutes on 2 CPU cores; uses the GPU when there is one
    qmamba quickstart --out runs/qs --preset micro-cobra
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("qmamba")
TASKS = ("vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench")


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    preset: str = "micro-qmamba-32"
    seed: int = 0
    n_align: int = 3000
    n_finetune: int = 3000
    n_eval: int = 100
    # the schedule: chosen over seeds 0-2 against 1 + 2 epochs at batch 32 (benchmarks/RESULTS.md, "The CPU
    # quickstart's schedule"); per image, batch 16 learns more than 32 at the same cost on CPU
    align_epochs: float = 0.5
    finetune_epochs: float = 1.75
    align_lr: float = 1e-3
    finetune_lr: float = 1e-3
    optimizer: str = "adamw"
    align_batch_size: int = 32
    finetune_batch_size: int = 16
    device: str | None = None
    eval_batch_size: int = 64
    timings: dict = field(default_factory=dict)


def eval_job(m, task: str) -> dict:
    """The files ``qmamba eval run`` takes for one micro-benchmark (official formats)."""
    e = lambda key: str(m.path("eval", task, key))  # noqa: E731
    if task == "pope":
        labels = [e(f"labels_{s}") for s in ("random", "popular", "adversarial")]
        return {"questions": labels, "images": e("image_folder"), "annotations": labels}
    if task == "mmbench":
        return {"questions": e("tsv"), "images": None, "annotations": [e("tsv")]}
    questions = {"vqav2": "questions", "gqa": "questions", "vizwiz": "annotations",
                 "textvqa": "llava_questions"}[task]  # TextVQA as LLaVA-1.5 asks it: with the OCR-token line
    annotations = {"vqav2": "annotations", "gqa": "questions", "vizwiz": "annotations",
                   "textvqa": "annotations"}[task]
    return {"questions": e(questions), "images": e("image_folder"), "annotations": [e(annotations)]}


def train_config(q: QuickstartConfig, world: Path) -> dict:
    stage = lambda name, data, epochs, lr, batch, max_len: {  # noqa: E731
        "name": name, "sources": [{"path": str(world / data), "image_root": str(world / "images")}],
        "epochs": epochs, "lr": lr, "optimizer": q.optimizer, "global_batch_size": batch,
        "micro_batch_size": batch, "max_length": max_len, "num_workers": 1}
    return {"model": {"preset": q.preset, "llm": "assets:micro/mamba", "vision": "assets:micro/siglip"},
            "stages": [stage("align", "align.json", q.align_epochs, q.align_lr, q.align_batch_size, 96),
                       stage("finetune", "finetune.json", q.finetune_epochs, q.finetune_lr, q.finetune_batch_size,
                             192)],
            "run": {"output_dir": str(Path(q.out) / "train"), "seed": q.seed, "precision": "bf16",
                    "activation_checkpointing": False, "checkpoint_every_steps": 100, "tensorboard": False,
                    "device": q.device}}


def run_quickstart(q: QuickstartConfig) -> dict:
    from qmamba.data.synth import chance_levels, synthesize
    from qmamba.eval.report import write_report
    from qmamba.eval.runner import run_eval
    from qmamba.train.config import parse_config
    from qmamba.train.runner import train
    from qmamba.utils.cpu import keep_freed_memory

    keep_freed_memory()
    out = Path(q.out)
    t0 = time.perf_counter()
    manifest = synthesize(out / "world", seed=q.seed, n_align=q.n_align, n_finetune=q.n_finetune,
                          n_eval=q.n_eval, overwrite=True, progress=True)
    q.timings["data_s"] = time.perf_counter() - t0
    log.info("quickstart: micro-world written in %.0f s", q.timings["data_s"])
    t0 = time.perf_counter()
    model_dir = train(parse_config(train_config(q, out / "world"), "quickstart"))
    q.timings["train_s"] = time.perf_counter() - t0
    log.info("quickstart: trained in %.0f s", q.timings["train_s"])
    t0 = time.perf_counter()
    scores = {}
    for task in TASKS:
        t_task = time.perf_counter()
        task_dir = run_eval(model_dir, task, **eval_job(manifest, task), out_dir=out / "eval",
                            batch_size=q.eval_batch_size, max_new_tokens=16, device=q.device, model_id=q.preset)
        scores[task] = json.loads((task_dir / "metrics.json").read_text())
        q.timings[f"eval_{task}_s"] = time.perf_counter() - t_task
        log.info("quickstart: %s scored in %.0f s", task, q.timings[f"eval_{task}_s"])
    q.timings["eval_s"] = time.perf_counter() - t0
    return {"model": str(model_dir), "scores": scores, "chance": chance_levels(manifest),
            "report": write_report([out / "eval"]), "timings": q.timings, "manifest": manifest}


def score_table(result: dict) -> str:
    rows = ["| task | metric | score | chance |", "| --- | --- | ---: | ---: |"]
    for task in TASKS:
        s = result["scores"][task]
        metric, main = s.get("main_metric"), s.get("main")
        if task == "pope":  # chance is stated for accuracy; F1 is undefined when no answer is "yes"
            metric, main = "accuracy_mean_of_splits", s["metrics"].get("accuracy_mean_of_splits")
        rows.append(f"| {task} | {metric} | {'n/a' if main is None else f'{main:.1f}'} | "
                    f"{100 * result['chance'][task]:.1f} |")
    return "\n".join(rows)


def pope_note(result: dict) -> str:
    """The POPE-like F1 beside the accuracy the table shows: F1 (mean of the splits) is POPE's headline, the
    figure ``qmamba eval report`` and the README show; always answering "yes" scores F1 2/3 on balanced labels."""
    f1 = result["scores"]["pope"].get("main")
    shown = "n/a (the model never answered yes)" if f1 is None else f"{f1:.1f}"
    return (f"pope: the table shows accuracy; F1 (mean of the splits, POPE's headline and what qmamba eval report "
            f"shows) is {shown}, against 66.7 for always answering yes")


def sample_answer(result: dict) -> tuple[str, str, str, str]:
    """Ask the trained model the first VQAv2-like question; returns (question, image, answer, ground truth)."""
    from qmamba.eval.tasks import TASKS as EVAL_TASKS
    from qmamba.pipeline import Pipeline

    job = eval_job(result["manifest"], "vqav2")
    item = EVAL_TASKS["vqav2"].load_items(job["questions"])[0]
    image = str(Path(job["images"]) / item.image)
    answers = json.loads(Path(job["annotations"][0]).read_text())["annotations"]
    truth = next(a["multiple_choice_answer"] for a in answers if a["question_id"] == item.question_id)
    pipe = Pipeline.from_pretrained(result["model"])
    return item.question, image, pipe.chat(item.prompt, image=image, max_new_tokens=16), truth
