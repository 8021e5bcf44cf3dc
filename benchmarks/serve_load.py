"""Load on ``qmamba serve``: open-loop Poisson arrivals of streamed chat completions at rising rates, against
the offline throughput of the same engine measured in the same run.

    python benchmarks/serve_load.py --preset qmamba-128 --out results/      # full size, random weights (GPU)
    python benchmarks/serve_load.py --model runs/qmamba-micro/model --device cpu --rates 1,2 --requests 8

The model: a full-size preset with random weights, built as ``qmamba bench`` builds it, with a word-level
tokenizer over its whole vocabulary (every id decodes to one word, so answers have text), or a saved model
directory. The server (``qmamba.serve``) runs in this process on a free loopback port with ``--slots`` decode
rows and a queue that holds every request of a rate; the client runs in its own process
(``serve_load_client.py``). Each request: one random image (different per request) as a data: URL, the same
short prompt, greedy, ``--max-tokens`` new tokens (an answer may end earlier on the end-of-text token: the
table gives the tokens that came back).

    offline    answers/s of an engine of ``--offline-batch`` slots given that many requests at once (no HTTP),
               and of batched ``generate`` on the same requests
    per rate   offered and achieved answers/s, p50 / p99 time to first token and end-to-end latency, tokens/s,
               requests sent / answered / failed (failures by class; the server's own count must agree)
    saturated  the best achieved answers/s as a fraction of the offline answers/s

``--admit-ratio`` / ``--admit-wait-steps`` set the server's admission (``infer.admission``, "When"; default
ServeConfig's). ``--out DIR`` writes serve_load_<model>[-eager][-admitR].json (and a .png of latency against
rate when matplotlib imports). ``--check`` only compares graphed with eager decoding
(``serve_load_offline.check_graphs``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "serve_load_client.py"
# this folder's kernels.py would shadow the ``kernels`` package that transformers looks for: off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _sibling(name: str):
    """The module of ``name``.py in this folder, loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _sibling("serve_load_client")  # the images and bodies the requests carry
offline = _sibling("serve_load_offline")  # the same engine without HTTP
COLUMNS = ["offered /s", "achieved /s", "TTFT p50 s", "TTFT p99 s", "latency p50 s", "latency p99 s", "tokens/s",
           "tokens/answer", "sent", "answered", "failed"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other error here (not the usage text first)
        fail(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="a full-size preset with random weights (qmamba-128, cobra, ...)")
    p.add_argument("--model", help="a saved multimodal model directory instead of --preset")
    p.add_argument("--tiny", action="store_true", help="the preset's toy shapes (tiny-NAME), for a CPU smoke run")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU if there is one)")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: bf16 on a GPU, fp32 on CPU)")
    p.add_argument("--slots", type=int, default=64, help="the server's decode rows (requests decoded together)")
    p.add_argument("--offline-batch", type=int, default=64, help="slots and requests of the offline run")
    p.add_argument("--rates", default="0.25x,0.5x,1x,1.5x",
                   help="comma-separated arrival rates: answers/s, or NUMx for NUM times the offline answers/s")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per rate")
    p.add_argument("--requests", type=int, default=None, help="requests per rate (instead of --duration)")
    p.add_argument("--all-rates", action="store_true",
                   help="run every rate (default: stop after one achieving less than half its offered rate)")
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per answer")
    p.add_argument("--prompt", default="what is the shape ?", help="the question asked about each image")
    p.add_argument("--image-size", type=int, default=64, help="side of the random PNG images, in pixels")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    p.add_argument("--admit-ratio", type=float, default=None,
                   help="the server's admission ratio (default: ServeConfig's; 0 admits at every step)")
    p.add_argument("--admit-wait-steps", type=int, default=None, help="the server's admission wait, in decode steps")
    p.add_argument("--no-cuda-graphs", action="store_true", help="decode eagerly (server and offline engine)")
    p.add_argument("--check", action="store_true",
                   help="only check that graphed decoding answers as eager decoding does (a few requests), then stop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="a directory for serve_load.json and serve_load.png")
    args = p.parse_args(argv)
    check_args(args)
    return args


def fail(message: str):
    raise SystemExit(f"serve_load.py: error: {message}")


def check_args(args: argparse.Namespace) -> None:
    if (args.preset is None) == (args.model is None):
        fail("give exactly one of --preset NAME (random weights) and --model DIR")
    if args.model is not None and not Path(args.model).is_dir():
        fail(f"--model {args.model}: no such directory")
    for name in ("slots", "offline_batch", "max_tokens", "image_size"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.requests is not None and args.requests < 1:
        fail(f"--requests must be >= 1, got {args.requests}")
    if args.duration <= 0 or args.timeout <= 0:
        fail(f"--duration and --timeout must be > 0, got {args.duration} and {args.timeout}")
    args.rate_specs = [parse_rate(r) for r in args.rates.split(",") if r.strip()]
    if not args.rate_specs:
        fail("--rates is empty; give e.g. 0.5x,1x or 2,4")


def parse_rate(text: str) -> tuple[float, bool]:
    """"2.5" -> (2.5, False): answers/s; "0.5x" -> (0.5, True): a fraction of the offline answers/s."""
    text = text.strip()
    relative = text.endswith("x")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        fail(f"--rates: {text!r} is not a number or NUMx")
    if not value > 0 or math.isinf(value):
        fail(f"--rates: {text!r} must be a positive rate")
    return value, relative


# ---------------------------------------------------------------------------------------------- the model
def word_tokenizer(vocab_size: int, words: list[str]):
    """A word-level tokenizer of exactly ``vocab_size`` ids: the zephyr markers (end-of-text is 0), ``words``,
    then filler words w<i>, so that every id a random-weight model chooses but end-of-text decodes to a
    visible word (an answer streams text from its first token, which times the first token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<unk>", *dict.fromkeys(words)]
    names += [f"w{i}" for i in range(len(names), vocab_size)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(names[:vocab_size])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  unk_token="<unk>")
    out.add_tokens(["<|user|>", "<|assistant|>"])  # one token each, and shown: random weights often repeat them
    return out


def build_pipeline(args):
    """The preset with random weights (as ``qmamba bench`` builds it) and a processor, or the saved model."""
    from qmamba.bench.multimodal import build_multimodal
    from qmamba.bench.options import BenchOptions
    from qmamba.data.image import MultiImageTransform
    from qmamba.data.processor import Processor
    from qmamba.pipeline import Pipeline
    from qmamba.utils.config import config_to_dict
    from qmamba.utils.device import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    if args.model is not None:
        return Pipeline.from_pretrained(args.model, device=str(device), dtype=args.dtype)
    opts = BenchOptions(sections=("vqa",), presets=(args.preset,), tiny=args.tiny, seed=args.seed)
    model = build_multimodal(args.preset, opts, device, resolve_dtype(args.dtype, device))
    words = re.findall(r"\w+|[^\w\s]", args.prompt)
    tokenizer = word_tokenizer(model.config.llm.vocab_size, words)
    transform = MultiImageTransform(config_to_dict(model.vision.config)["transforms"])
    return Pipeline(model, Processor(tokenizer, transform, model.config.chat_template, model.config.image_position))


def make_service(pipe, args, max_queue: int):
    from qmamba.serve import ServeConfig
    from qmamba.serve.service import ChatService

    admission = {k: getattr(args, k) for k in ("admit_ratio", "admit_wait_steps") if getattr(args, k) is not None}
    config = ServeConfig(model=args.preset or args.model, served_model_name="load", num_slots=args.slots,
                         max_queue=max_queue, timeout=args.timeout, max_prompt_tokens=None,
                         max_tokens_limit=args.max_tokens, default_max_tokens=args.max_tokens,
                         cuda_graphs=not args.no_cuda_graphs, **admission)
    return ChatService(pipe, config)


# ---------------------------------------------------------------------------------------------- the load
def spec(args, rate: float, count: int, first: int, url: str = "") -> dict:
    return {"url": url, "model": "load", "prompt": args.prompt, "max_tokens": args.max_tokens, "rate": rate,
            "count": count, "seed": args.seed, "first": first, "image_size": args.image_size,
            "timeout": args.timeout}


def run_client(job: dict, timeout: float) -> dict:
    """The load generator in its own process; its results."""
    try:
        done = subprocess.run([sys.executable, str(CLIENT)], input=json.dumps(job), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"the load client did not finish {job['count']} requests at {job['rate']:.3g}/s in {timeout:.0f} s")
    if done.returncode != 0:
        fail(f"the load client failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def server_outcomes(url: str) -> dict[str, int]:
    """The server's count of finished requests by outcome (``qmamba_requests_total`` of /metrics)."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    return {m[1]: int(float(m[2])) for m in re.finditer(r'qmamba_requests_total\{outcome="(\w+)"\} (\S+)', text)}


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(rate: float, got: dict, server: dict[str, int]) -> dict:
    """One rate's figures from the client's per-request results and the server's count."""
    reqs = got["requests"]
    ok = [r for r in reqs if r["error"] is None]
    failures: dict[str, int] = {}
    for r in reqs:
        if r["error"] is not None:
            failures[r["error"]] = failures.get(r["error"], 0) + 1
    window = max((r["sent"] + r["latency"] for r in ok), default=got["elapsed"])  # first send -> last answer
    tokens = sum(r["tokens"] or 0 for r in ok)
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    latency = [r["latency"] for r in ok]
    return {"offered_per_s": rate, "achieved_per_s": len(ok) / window, "ttft_p50_s": percentile(ttft, 50),
            "ttft_p99_s": percentile(ttft, 99), "latency_p50_s": percentile(latency, 50),
            "latency_p99_s": percentile(latency, 99), "tokens_per_s": tokens / window,
            "tokens_per_answer": tokens / len(ok) if ok else None, "sent": len(reqs), "answered": len(ok),
            "failed": len(reqs) - len(ok), "failures": failures, "server_answered": server.get("stop", 0) +
            server.get("length", 0), "server_outcomes": server, "client_max_lag_s": got["max_lag"],
            "requests": reqs}


def row(r: dict) -> str:
    cells = [r["offered_per_s"], r["achieved_per_s"], r["ttft_p50_s"], r["ttft_p99_s"], r["latency_p50_s"],
             r["latency_p99_s"], r["tokens_per_s"], r["tokens_per_answer"], r["sent"], r["answered"], r["failed"]]
    text = "| " + " | ".join("-" if c is None else f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells)
    text += " |" + (f" failures: {r['failures']}" if r["failures"] else "")
    if r["server_answered"] != r["answered"]:
        text += f" (the server counted {r['server_answered']} answers: {r['server_outcomes']})"
    return text


def engine_share(stats, seconds: float) -> dict:
    """Where the engine's time went during one rate (``EngineStats`` of that rate, its wall ``seconds``)."""
    return {"admit_frac": stats.admit_seconds / seconds, "decode_frac": stats.decode_seconds / seconds,
            "admissions": stats.admissions, "admitted_per_admission": stats.admitted / max(stats.admissions, 1),
            "admitted": stats.admitted, "decode_steps": stats.decode_steps, "decoded_rows": stats.decoded_rows,
            "rows_per_step": stats.decoded_rows / max(stats.decode_steps, 1),
            "ms_per_admission": 1e3 * stats.admit_seconds / max(stats.admissions, 1),
            "ms_per_step": 1e3 * stats.decode_seconds / max(stats.decode_steps, 1)}


def engine_line(e: dict) -> str:
    return (f" admitting {100 * e['admit_frac']:.0f}% of the time ({e['admissions']} admissions of "
            f"{e['admitted_per_admission']:.1f} requests, {e['ms_per_admission']:.1f} ms each), decoding "
            f"{100 * e['decode_frac']:.0f}% ({e['decode_steps']} steps of {e['rows_per_step']:.1f} rows, "
            f"{e['ms_per_step']:.2f} ms each)")


def load_rates(server, args, offline_rate: float) -> list[dict]:
    """Every rate in turn: the client's run, the table row, and the server's count of what it answered."""
    rows, first = [], 0
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    for value, relative in args.rate_specs:
        rate = value * offline_rate if relative else value
        count = args.requests or max(1, round(rate * args.duration))
        before, engine_before, t0 = server_outcomes(server.url), server.service.engine.stats, time.perf_counter()
        got = run_client(spec(args, rate, count, first, server.url), timeout=args.timeout + count / rate + 120)
        after = server_outcomes(server.url)
        engine = engine_share(server.service.engine.stats.since(engine_before), time.perf_counter() - t0)
        server_count = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        rows.append({**summarize(rate, got, server_count), "engine": engine})
        print(row(rows[-1]), flush=True)
        first += count
        if rows[-1]["achieved_per_s"] < 0.5 * rate and not args.all_rates:
            print(f"saturated at {rate:.3g}/s offered: higher rates skipped (--all-rates runs them)", flush=True)
            break
    for r in rows:  # after the table, which these lines would break
        print(f"at {r['offered_per_s']:.3g}/s offered, the engine was{engine_line(r['engine'])}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- reporting
def environment(service, args) -> dict:
    import torch

    device = service.pipe.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {"device": name, "dtype": str(next(service.pipe.model.parameters()).dtype).removeprefix("torch."),
            "model": args.preset or args.model, "slots": args.slots, "offline_batch": args.offline_batch,
            "max_tokens": args.max_tokens, "visual_tokens": service.pipe.model.num_visual_tokens,
            "torch": torch.__version__, "cuda_graphs": service.decoder.use_graphs,
            "mode": ("" if service.decoder.use_graphs or device.type != "cuda" else "-eager")
            + ("" if args.admit_ratio is None else f"-admit{args.admit_ratio:g}"),
            "admit_ratio": service.engine.admit_ratio, "admit_wait_steps": service.engine.admit_wait_steps}


def plot(results: dict, path: Path) -> bool:
    """Latency and time to first token against the achieved rate, if matplotlib imports."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = results["rates"]
    x = [r["achieved_per_s"] for r in rates]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("latency_p50_s", "latency p50"), ("latency_p99_s", "latency p99"),
                       ("ttft_p50_s", "TTFT p50"), ("ttft_p99_s", "TTFT p99")):
        ax.plot(x, [r[key] for r in rates], marker="o", label=label)
    ax.axvline(results["offline"]["engine"]["answers_per_s"], color="grey", linestyle="--", label="offline")
    ax.set(xlabel="answers/s", ylabel="seconds", yscale="log", title=f"{results['env']['model']}, "
           f"{results['env']['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: dict, out: str) -> None:
    """serve_load_<model>[-eager].json (and .png) in ``out``: several runs can share the folder."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    stem = path / f"serve_load_{Path(results['env']['model']).name}{results['env']['mode']}"
    rates = [{**r, "requests": [{k: v for k, v in q.items() if k != "text"} for q in r["requests"]]}
             for r in results.get("rates", [])]  # the answers' text stays out of the file
    stem.with_suffix(".json").write_text(json.dumps({**results, "rates": rates}, indent=1))
    drawn = plot(results, stem.with_suffix(".png"))
    print(f"wrote {stem}.json" + (f" and {stem}.png" if drawn else ""))


def bodies(args):
    """index -> the chat-completion body of request ``index``, as the load client sends it."""
    return lambda index: client.body(spec(args, 0.0, 1, index), index)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the table; return (and with --out write) the results."""
    from qmamba.errors import QMambaError
    from qmamba.serve.server import BackgroundServer

    args = parse_args(argv)
    client.raise_file_limit()
    try:
        pipe = build_pipeline(args)
    except QMambaError as e:
        fail(str(e))
    service = make_service(pipe, args, max_queue=1 << 30)  # open loop: every request of a rate may wait
    results = {"env": environment(service, args)}
    env = results["env"]
    print(f"{env['device']}, {env['model']} ({env['dtype']}, {'CUDA graphs' if env['cuda_graphs'] else 'eager'}), "
          f"{args.slots} slots, {args.max_tokens} tokens per answer, admission ratio {env['admit_ratio']} / wait "
          f"{env['admit_wait_steps']} steps", flush=True)
    if args.check or env["cuda_graphs"]:
        results["check"] = offline.check_graphs(service, bodies(args), min(args.slots, 8), args.max_tokens)
        if args.check:
            return results
    results["offline"] = offline.figures(service, bodies(args), args.offline_batch, args.max_tokens)
    engine = results["offline"]["engine"]
    engine["engine"] = engine_share(engine.pop("stats"), engine["seconds"])
    offline_rate, batched = engine["answers_per_s"], results["offline"]["generate"]
    print(f"offline: engine {offline_rate:.3g} answers/s at batch {args.offline_batch}; batched generate "
          + (f"{batched['answers_per_s']:.3g} answers/s" if "error" not in batched else batched["error"]), flush=True)
    print(f"offline, the engine was{engine_line(engine['engine'])}", flush=True)
    with BackgroundServer(service) as server:
        results["rates"] = load_rates(server, args, offline_rate)
    best = max(r["achieved_per_s"] for r in results["rates"])
    results["saturated"] = {"answers_per_s": best, "fraction_of_offline": best / offline_rate}
    print(f"saturated: {best:.3g} answers/s = {best / offline_rate:.0%} of offline", flush=True)
    if args.out:
        write(results, args.out)
    return results


if __name__ == "__main__":
    main()
