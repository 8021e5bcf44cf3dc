"""Training and evaluation over N processes with torchrun (one per GPU, NCCL; gloo ranks with --cpu):

1. scaling: align + finetune of a micro Q-Mamba on the micro-world for each N in --procs: median step time,
   tokens/s in all and per process, peak GPU memory of rank 0, and scaling efficiency against the smallest N
   (the global batch is the same for every N, so ideal step time is t(N0) * N0 / N);
2. resume: finetune run straight with the smallest N, and with the largest N cut after a checkpoint (as if
   the run died there) then resumed with the smallest N: the loss of every step side by side;
3. eval: ``qmamba eval run`` of the trained model on two micro-benchmarks with the smallest and the largest
   N: predictions byte for byte, metrics;
4. --full: one optimizer step (two, the first not timed) of the full-size preset (random weights) for each N.

NVLink multicast stays off (NCCL_NVLS_ENABLE=0 ...). Logs of every launch go to --out; prints markdown
tables and writes results.json there.

    python benchmarks/multi_gpu.py --procs 1 2 --out /tmp/multi               # GPUs
    python benchmarks/multi_gpu.py --procs 1 2 4 8 --full qmamba-256 --out /tmp/multi
    python benchmarks/multi_gpu.py --procs 1 2 --cpu --steps 6 --out /tmp/multi   # the same on CPU (gloo)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
       "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
EVAL_TASKS = ("vqav2", "pope")


def torchrun(n: int, args: list[str], log: Path, cpu: bool) -> None:
    """``torchrun --nproc_per_node=n -m qmamba ARGS``; output to ``log``; raises with its tail on failure."""
    env = {**os.environ, **ENV, **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "qmamba",
           *args]
    with log.open("w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{' '.join(cmd[3:])} failed ({done.returncode}); {log}:\n{tail}")


def micro_world(root: Path, n_images: int) -> object:
    from qmamba.data.synth import synthesize

    return synthesize(root, seed=0, n_align=n_images, n_finetune=n_images, n_eval=48, overwrite=True,
                      progress=False)


def run_config(world: Path, out: Path, args, stages=("align", "finetune"), preset: str | None = None) -> Path:
    """A run config for the micro preset on the micro-world (or ``preset`` with random weights); returns its
    path. Every step holds the same global batch whatever the number of processes."""
    data = {"align": "align.json", "finetune": "finetune.json"}
    model = {"preset": preset, "tokenizer": "assets:micro/mamba"} if preset else {
        "preset": args.preset, "llm": "assets:micro/mamba", "vision": "assets:micro/siglip"}
    micro = args.micro_batch if not preset else 1
    cfg = {"model": model,
           "stages": [{"name": s, "sources": [{"path": str(world / data[s]), "image_root": str(world / "images")}],
                       "global_batch_size": args.global_batch if not preset else max(args.procs),
                       "micro_batch_size": micro, "lr": 1e-3 if s == "align" else 5e-4, "max_length": 160,
                       "max_steps": args.steps if not preset else 2, "num_workers": 1, "group_by": None}
                      for s in stages],
           "run": {"output_dir": str(out), "seed": 0, "precision": "fp32" if args.cpu else "bf16",
                   "activation_checkpointing": bool(preset), "checkpoint_every_steps": args.cut,
                   "keep_last": 1000, "tensorboard": False, "device": "cpu" if args.cpu else None}}
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def metrics(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def stage_figures(stage_dir: Path, n: int, skip: int) -> dict:
    """Median step time and tokens/s over the logged steps after the first ``skip`` (compilation, warm-up)."""
    rows = metrics(stage_dir)
    timed = [r for r in rows if r["step"] > skip] or rows
    step_s = statistics.median(r["step_time_s"] for r in timed)
    tok_s = statistics.median(r["tokens_per_s"] for r in timed)
    peak = max((r.get("peak_memory_gb", 0.0) for r in rows), default=0.0)
    return {"procs": n, "steps": len(rows), "step_s": step_s, "tokens_per_s": tok_s, "tokens_per_s_per_proc":
            tok_s / n, "peak_gb_rank0": peak}


def scaling(args, world: Path, out: Path) -> list[dict]:
    results = []
    for n in args.procs:
        run = out / f"scaling-{n}"
        shutil.rmtree(run, ignore_errors=True)
        torchrun(n, ["train", "--config", str(run_config(world, run, args))], out / f"scaling-{n}.log", args.cpu)
        for stage_dir in sorted(p for p in run.iterdir() if p.is_dir() and (p / "metrics.jsonl").is_file()):
            results.append({"stage": stage_dir.name.split("-", 1)[1], **stage_figures(stage_dir, n, args.skip)})
    return add_efficiency(results)


def add_efficiency(results: list[dict]) -> list[dict]:
    """Scaling efficiency of each row against the first row of its stage: t0 n0 / (t n) for a fixed global batch."""
    for r in results:
        base = next(b for b in results if b["stage"] == r["stage"])
        r["efficiency"] = base["step_s"] * base["procs"] / (r["step_s"] * r["procs"])
    return results


def cut_after(stage_dir: Path, step: int) -> None:
    """Leave ``stage_dir`` as a run that died after its checkpoint at ``step``."""
    ckpts = stage_dir / "checkpoints"
    for p in ckpts.glob("step-*"):
        if int(p.name.split("-")[1].split(".")[0]) > step:
            shutil.rmtree(p)
    (ckpts / "latest").write_text(f"step-{step:08d}\n")
    (stage_dir / "DONE").unlink(missing_ok=True)
    shutil.rmtree(stage_dir / "model", ignore_errors=True)


def resume(args, world: Path, out: Path) -> dict:
    small, large = min(args.procs), max(args.procs)
    runs = {}
    for name, n in (("straight", small), ("cut", large)):
        runs[name] = out / f"resume-{name}"
        shutil.rmtree(runs[name], ignore_errors=True)
        cfg = run_config(world, runs[name], args, stages=("finetune",))
        torchrun(n, ["train", "--config", str(cfg)], out / f"resume-{name}-{n}.log", args.cpu)
    cut_after(runs["cut"] / "0-finetune", args.cut)
    torchrun(small, ["train", "--config", str(runs["cut"].with_suffix(".yaml"))], out / f"resume-cut-{small}.log",
             args.cpu)
    a = {r["step"]: r["loss"] for r in metrics(runs["straight"] / "0-finetune")}
    b = {r["step"]: r["loss"] for r in metrics(runs["cut"] / "0-finetune")}
    diffs = {s: abs(a[s] - b[s]) / max(abs(a[s]), 1e-12) for s in a if s in b}
    return {"straight_procs": small, "cut_procs": large, "resumed_procs": small, "cut_after": args.cut,
            "straight": a, "resumed": b, "max_rel_diff": max(diffs.values()), "same_steps": sorted(a) == sorted(b)}


def evaluate(args, manifest, model: Path, out: Path) -> list[dict]:
    from qmamba.quickstart import eval_job

    results = []
    for task in EVAL_TASKS:
        job = eval_job(manifest, task)
        files = ["--questions", *([job["questions"]] if isinstance(job["questions"], str) else job["questions"]),
                 *(["--images", job["images"]] if job["images"] else []), "--annotations", *job["annotations"]]
        runs = {}
        for n in sorted({min(args.procs), max(args.procs)}):
            runs[n] = out / f"eval-{n}"
            shutil.rmtree(runs[n] / task, ignore_errors=True)
            torchrun(n, ["eval", "run", "--model", str(model), "--task", task, *files, "--out", str(runs[n]),
                         "--batch-size", "16", "--max-new-tokens", "16", "--no-progress",
                         *(["--device", "cpu"] if args.cpu else [])], out / f"eval-{task}-{n}.log", args.cpu)
        results.append(eval_figures(task, {n: d / task for n, d in runs.items()}))
    return results


def eval_figures(task: str, runs: dict[int, Path]) -> dict:
    """One task's scores for each N (its run folder) and whether the smallest and largest N agree (None with a
    single N: nothing to compare)."""
    procs = sorted(runs)
    scores = [json.loads((runs[n] / "metrics.json").read_text()) for n in procs]
    predictions = [(runs[n] / "predictions.jsonl").read_bytes() for n in procs]
    several = len(procs) > 1
    return {"task": task, "procs": procs, "main_metric": scores[0]["main_metric"], "main": [m["main"] for m in scores],
            "same_metrics": scores[0]["metrics"] == scores[-1]["metrics"] if several else None,
            "same_predictions": predictions[0] == predictions[-1] if several else None}


def full_step(args, world: Path, out: Path) -> list[dict]:
    results = []
    for n in args.procs:
        run = out / f"full-{n}"
        shutil.rmtree(run, ignore_errors=True)
        cfg = run_config(world, run, args, stages=("finetune",), preset=args.full)
        torchrun(n, ["train", "--config", str(cfg)], out / f"full-{n}.log", args.cpu)
        results.append(stage_figures(run / "0-finetune", n, skip=1))
        shutil.rmtree(run / "0-finetune" / "checkpoints", ignore_errors=True)  # tens of GB at full size
    return results


def tables(res: dict) -> str:
    out = []
    if res.get("scaling"):
        out += ["| stage | procs | step s | tokens/s | tokens/s per proc | peak GiB (rank 0) | efficiency |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['stage']} | {r['procs']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                f"{r['tokens_per_s_per_proc']:.0f} | {r['peak_gb_rank0']:.2f} | {r['efficiency']:.2f} |"
                for r in res["scaling"]]
    if res.get("full"):
        out += ["", f"| {res['args']['full']} finetune step | procs | step s | tokens/s per proc | peak GiB |",
                "| --- | ---: | ---: | ---: | ---: |"]
        out += [f"| | {r['procs']} | {r['step_s']:.2f} | {r['tokens_per_s_per_proc']:.0f} | {r['peak_gb_rank0']:.1f} |"
                for r in res["full"]]
    if res.get("resume"):
        r = res["resume"]
        out += ["", f"resume: {r['cut_procs']} processes cut after step {r['cut_after']}, resumed with "
                f"{r['resumed_procs']}: largest relative loss difference to a straight {r['straight_procs']}-process "
                f"run {r['max_rel_diff']:.2e} over {len(r['straight'])} steps (same steps: {r['same_steps']})"]
    out += [f"eval {e['task']} with {e['procs']} processes: "
            + ("" if e["same_predictions"] is None else
               f"same predictions {e['same_predictions']}, same metrics {e['same_metrics']} ")
            + f"({e['main_metric']} {' vs '.join(str(m) for m in e['main'])})" for e in res.get("eval", [])]
    out += [f"FAILED {k}: {v.splitlines()[0]}" for k, v in res.get("errors", {}).items()]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="numbers of processes (GPUs)")
    ap.add_argument("--out", default="/tmp/qmamba-multi")
    ap.add_argument("--cpu", action="store_true", help="gloo ranks on the CPU")
    ap.add_argument("--preset", default="micro-qmamba-32")
    ap.add_argument("--images", type=int, default=512, help="micro-world images per stage")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per stage")
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2, help="steps left out of the timings")
    ap.add_argument("--cut", type=int, default=4, help="checkpoint interval; the resume check cuts after the first")
    ap.add_argument("--full", metavar="PRESET", help="also one finetune step of this full-size preset")
    ap.add_argument("--only", nargs="+", choices=("scaling", "resume", "eval", "full"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = micro_world(out / "world", args.images)
    res: dict = {"args": vars(args), "errors": {}}
    wanted = args.only or ["scaling", "resume", "eval"] + (["full"] if args.full else [])
    for name in wanted:
        try:
            if name == "scaling":
                res["scaling"] = scaling(args, out / "world", out)
            elif name == "resume":
                res["resume"] = resume(args, out / "world", out)
            elif name == "eval":
                model = out / f"scaling-{max(args.procs)}" / "1-finetune" / "model"
                if not model.is_dir():
                    raise RuntimeError(f"no trained model at {model}: run the scaling part first")
                res["eval"] = evaluate(args, manifest, model, out)
            else:
                res["full"] = full_step(args, out / "world", out)
        except Exception as e:  # one part failing leaves the others' figures
            res["errors"][name] = f"{type(e).__name__}: {e}"
            print(res["errors"][name], file=sys.stderr)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    print(tables(res))


if __name__ == "__main__":
    main()
