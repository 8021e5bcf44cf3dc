"""Run, score and report the six benchmarks (VQAv2, GQA, VizWiz, TextVQA, POPE, MMBench).

    qmamba eval run --model runs/q256/model --task gqa --questions testdev_balanced_questions.json \\
        --images gqa/images --annotations testdev_balanced_questions.json --out runs/q256/eval
    qmamba eval score --task vqav2 --annotations v2_mscoco_val2014_annotations.json \\
        --predictions results.json --out metrics.json --per-question per_question.jsonl
    qmamba eval report runs/q256/eval runs/cobra/eval --out report.md
    qmamba eval merge runs/q256/eval --task gqa         (after --shard I/N runs; the last shard merges itself)
    qmamba eval submit --task vqav2 --questions llava_vqav2_mscoco_test2015.jsonl \\
        --predictions runs/q256/eval/vqav2/predictions.jsonl --out vqav2_testdev.json

A run writes <out>/<task>/: predictions.jsonl (appended batch by batch: rerun the same command to resume),
the official results file, metrics.json and per_question.jsonl (with --annotations), run_config.json.
Under torchrun each process answers its own shard on its own GPU.
"""

from __future__ import annotations

import argparse

SUBMIT_TASKS = ("vqav2", "vizwiz", "gqa", "mmbench")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    _run_arguments(sub.add_parser("run", help="answer a benchmark's questions with a model (resumable)",
                                  description="Answer a benchmark's questions with a model, then score."))
    _score_arguments(sub.add_parser("score", help="score a predictions file in any supported format",
                                    description="Score a predictions file against the annotations."))
    r = sub.add_parser("report", help="a markdown table of runs, with the paper's Table 1",
                       description="A markdown table of the main metric per task and run.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders holding <task>/metrics.json")
    r.add_argument("--out", help="also write the table to this file")
    m = sub.add_parser("merge", help="merge the shard files of a sharded run, then score",
                       description="Merge predictions.shard-I-of-N.jsonl files into predictions.jsonl, then score.")
    m.add_argument("out_dir", metavar="OUT_DIR", help="the run's --out folder (or its <task> folder)")
    m.add_argument("--task", help="which task folder to merge when several hold shard files")
    s = sub.add_parser("submit", help="the upload file of an evaluation server",
                       description="VQAv2 test-dev JSON, VizWiz test JSON, GQA testdev predictions, MMBench XLSX.")
    s.add_argument("--task", required=True, help=f"one of {', '.join(SUBMIT_TASKS)}")
    s.add_argument("--questions", help="the test questions file (gqa: optional, to check ids)")
    s.add_argument("--predictions", required=True, help="answers JSONL (predictions.jsonl of a run)")
    s.add_argument("--out", required=True, help="the upload file to write (.json; MMBench .xlsx)")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a multimodal model directory")
    p.add_argument("--task", required=True, help="vqav2, gqa, vizwiz, textvqa, pope or mmbench")
    p.add_argument("--questions", required=True, nargs="+", metavar="FILE",
                   help="official questions file or LLaVA question JSONL (POPE: one label file per split)")
    p.add_argument("--images", help="the folder of the images the questions name (not for MMBench)")
    p.add_argument("--out", required=True, help="run folder; the task's files go to OUT/<task>/")
    p.add_argument("--annotations", nargs="+", action="extend", metavar="FILE", help="score against these")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="answer only the first N questions (scored with missing=skip)")
    p.add_argument("--shard", metavar="I/N", help="answer items I::N only (default under torchrun: RANK/WORLD_SIZE)")
    p.add_argument("--max-new-tokens", type=int, help="default: 128 (MMBench 1024), as LLaVA-1.5")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--model-id", help="the model_id written in answers and metrics (default: the folder name)")
    p.add_argument("--ocr-file", help="TextVQA: OCR tokens for the 'Reference OCR token' line")
    p.add_argument("--pipeline", help="vqav2/vizwiz scoring: llava (default) or official")
    p.add_argument("--extractor", help="mmbench scoring: vlmevalkit (default), vlmevalkit-aca64dbb, opencompass-2023")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="vqav2, gqa, vizwiz, textvqa, pope or mmbench")
    p.add_argument("--annotations", required=True, nargs="+", action="extend", metavar="FILE",
                   help="annotations (POPE: the label file of every split scored)")
    p.add_argument("--questions", help="the questions file the answers were made from (maps LLaVA ids)")
    p.add_argument("--predictions", required=True, help="official results file, answers JSONL, or MMBench TSV/XLSX")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--per-question", help="also write each question's score (JSON lines)")
    p.add_argument("--pipeline", help="vqav2/vizwiz: llava (default) or official")
    p.add_argument("--extractor", help="mmbench: vlmevalkit (default), vlmevalkit-aca64dbb, opencompass-2023")
    p.add_argument("--missing", help="questions without an answer: wrong (default; POPE: error), skip or error")
    p.add_argument("--model-name", help="the row name `qmamba eval report` shows for these metrics")


def _options(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, str]:
    """The scoring options given on the command line (a task rejects those it does not take)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None)}


def run(args: argparse.Namespace) -> int:
    actions = {"run": _run, "score": _score, "report": _report, "merge": _merge, "submit": _submit}
    return actions[args.action](args)


def _run(args: argparse.Namespace) -> int:
    from qmamba.eval.runner import run_eval
    from qmamba.eval.shards import parse_shard

    task_dir = run_eval(
        args.model, args.task, args.questions, args.images, out_dir=args.out, annotations=args.annotations,
        batch_size=args.batch_size, limit=args.limit, shard=parse_shard(args.shard) if args.shard else None,
        max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype, model_id=args.model_id,
        show_progress=not args.no_progress, load_options={"ocr_file": args.ocr_file} if args.ocr_file else None,
        score_options=_options(args, ("pipeline", "extractor")) or None)
    _print_run_summary(task_dir)
    return 0


def _print_run_summary(task_dir) -> None:
    import json

    from qmamba.eval.runner import read_config
    from qmamba.eval.shards import find_shards

    if not (task_dir / "run_config.json").is_file():
        n = find_shards(task_dir)
        print(f"{task_dir}: this shard is done; the last of the {n} shards to finish merges them "
              f"(or run: qmamba eval merge {task_dir})")
        return
    config = read_config(task_dir)
    counts = config["counts"]
    print(f"{config['task']}: {counts['n_answered']} answers ({counts['n_generated']} new) in "
          f"{task_dir / 'predictions.jsonl'}; results: {task_dir / config['files']['results']}")
    if config["files"].get("metrics"):
        result = json.loads((task_dir / "metrics.json").read_text(encoding="utf-8"))
        print(metrics_table(result))


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def metrics_table(result: dict) -> str:
    """Main metric, top-level scalars, then float entries of nested groups (groups over 12 are summarised)."""
    rows = [(f"{result['main_metric']} (main)", _fmt(result["main"]))]
    for key, value in result["metrics"].items():
        if not isinstance(value, dict):
            rows.append((key, _fmt(value)))
        elif len(value) > 12:
            rows.append((key, f"({len(value)} groups: see metrics.json)"))
        else:
            for sub, v in value.items():
                inner = v.items() if isinstance(v, dict) else [(None, v)]
                rows += [(".".join(filter(None, (key, sub, k))), _fmt(x)) for k, x in inner
                         if x is None or isinstance(x, float)]
    c = result["counts"]
    rows.append(("answered", f"{c['n_predictions']} for {c['n_questions']} questions, {c['n_missing']} missing "
                             f"(missing={c['missing_policy']})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{result['task']}:"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _score(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qmamba.eval.score import score_task

    result = score_task(args.task, args.annotations, args.predictions, args.questions, args.per_question,
                        **_options(args, ("pipeline", "extractor", "missing")))
    if args.model_name:
        result["model"] = args.model_name
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(metrics_table(result))
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qmamba.eval.report import write_report

    table = write_report(args.run_dirs)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    print(table, end="")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from qmamba.eval.runner import finish_run
    from qmamba.eval.shards import merge_shards

    merged = merge_shards(args.out_dir, args.task)
    task_dir = merged.parent
    finish_run(task_dir)
    print(f"merged into {merged}")
    _print_run_summary(task_dir)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from qmamba.eval import submission
    from qmamba.eval.errors import EvalOptionError

    if args.task not in SUBMIT_TASKS:
        raise EvalOptionError(f"no evaluation server takes {args.task!r} uploads here; tasks: "
                              f"{', '.join(SUBMIT_TASKS)} (TextVQA val and POPE are scored locally: qmamba eval score)")
    if args.task == "gqa":
        summary = submission.gqa_testdev(args.predictions, args.out, args.questions)
    else:
        if not args.questions:
            raise EvalOptionError(f"{args.task}: pass --questions (the test questions the answers were made from)")
        make = {"vqav2": submission.vqav2_testdev, "vizwiz": submission.vizwiz_test,
                "mmbench": submission.mmbench_xlsx}[args.task]
        summary = make(args.questions, args.predictions, args.out)
    print(f"{args.task}: wrote {summary['path']}: {summary['n_answered']} answers"
          + (f" for {summary['n_questions']} questions" if summary.get("n_questions") is not None else ""))
    return 0
