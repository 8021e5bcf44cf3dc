"""``replicate``: every selected cell at every seed, skipping finished ones, then the report.

Runs go seed by seed (all cells at the first seed, then the second, ...), so an interrupted replication
already has one score per cell to show. A run that fails stops the replication with its error; running the
same command again resumes it (``run.py`` says how each step resumes).

With ``jobs`` > 1 the work is split into that many shards, each run by its own process (``spawn``): a GPU holds
several small-tier runs at once, which one run leaves mostly idle. First the VL-Mamba trainings that
preprocessing connectors start from, then the runs; runs that share a training at one seed are always in one
shard, so no two processes train the same thing, and shards are balanced by their number of trainings. The
report is written once every shard has ended.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from qmamba.errors import ConfigError, QMambaError
from qmamba.replicate.registry import Cell, TrainSpec, build_registry, select
from qmamba.replicate.report import write_report
from qmamba.replicate.run import RESULT, cell_dir, ensure_trained, ensure_world, run_cell, write_json_atomic
from qmamba.replicate.tiers import Tier, get_tier

log = logging.getLogger("qmamba")


@dataclass
class ReplicateOptions:
    out: str
    tier: Tier | str = "tiny"
    seeds: int = 3
    experiments: list[str] | None = None  # default: all
    presets: list[str] | None = None  # variant names; default: all
    bench_json: str | None = None
    device: str | None = None
    jobs: int = 1  # processes running shards of the runs at once


def replicate(opts: ReplicateOptions) -> dict:
    """Run what is missing and write the report; returns report.json's data (plus ``"ran"``: the runs done now)."""
    tier = get_tier(opts.tier) if isinstance(opts.tier, str) else opts.tier
    tier.check()
    tier = tier.resolved()
    if opts.seeds < 1:
        raise ConfigError(f"--seeds {opts.seeds}: need at least one seed")
    if opts.jobs < 1:
        raise ConfigError(f"--jobs {opts.jobs}: need at least one process")
    bench = _load_bench(opts.bench_json)
    cells = select(build_registry(tier), opts.experiments, opts.presets)
    out, seeds = Path(opts.out), list(range(opts.seeds))
    out.mkdir(parents=True, exist_ok=True)
    _check_tier(out, tier)
    world = ensure_world(out, tier)
    todo = [(seed, c) for seed in seeds for c in cells if not (cell_dir(out, c, seed) / RESULT).is_file()]
    log.info("replicate: %d cell(s) x %d seed(s); %d run(s) finished, %d to run", len(cells), len(seeds),
             len(cells) * len(seeds) - len(todo), len(todo))
    if opts.jobs > 1 and len(todo) > 1:
        _run_parallel(out, tier, todo, opts.device, opts.jobs)
        ran = [(seed, c) for seed, c in todo if (cell_dir(out, c, seed) / RESULT).is_file()]
    else:
        _run_items(out, tier, [("run", seed, c) for seed, c in todo], opts.device, world)
        ran = todo
    report = write_report(out, tier.name, cells, seeds, bench, settings=tier.settings(),
                          heldout_style=tier.heldout_style)
    return {**report, "ran": [f"{c.experiment}/{c.variant}/seed{seed}" for seed, c in ran]}


def shard_runs(runs: list[tuple[int, Cell]], n: int) -> list[list[tuple[int, Cell]]]:
    """``runs`` (seed, cell) split into ``n`` shards, each in ``runs``' order. Runs at one seed that train the
    same spec (and so may share an evaluation) form one group, one training each; the groups go in order to the
    shard with the fewest so far. (The specs preprocessing starts from are trained before: ``_run_parallel``.)"""
    groups: dict[tuple[int, str], list[int]] = {}  # (seed, spec key) -> indices into runs
    for i, (seed, cell) in enumerate(runs):
        groups.setdefault((seed, cell.train.key), []).append(i)
    load, members = [0] * n, [[] for _ in range(n)]
    for indices in sorted(groups.values(), key=lambda g: g[0]):
        k = load.index(min(load))
        load[k] += 1
        members[k] += indices
    return [[runs[i] for i in sorted(m)] for m in members]


def _sources(runs: list[tuple[int, Cell]]) -> list[tuple[int, TrainSpec]]:
    """The (seed, spec) that runs' preprocessing starts from, each once, in order."""
    seen: dict[tuple[int, str], tuple[int, TrainSpec]] = {}
    for seed, cell in runs:
        spec = cell.train.preprocess_from
        while spec is not None:
            seen.setdefault((seed, spec.key), (seed, spec))
            spec = spec.preprocess_from
    return list(seen.values())


def _run_parallel(out: Path, tier: Tier, todo: list[tuple[int, Cell]], device: str | None, jobs: int) -> None:
    """The sources' trainings, then the runs, each split over up to ``jobs`` processes."""
    sources = [("train", seed, spec) for seed, spec in _sources(todo)]
    if sources:
        log.info("replicate: %d training(s) that preprocessing starts from, %d at a time", len(sources), jobs)
        _in_processes(out, tier, [sources[i::jobs] for i in range(jobs)], device)
    shards = [[("run", seed, c) for seed, c in shard] for shard in shard_runs(todo, jobs)]
    log.info("replicate: %d run(s) in %d processes", len(todo), sum(bool(s) for s in shards))
    _in_processes(out, tier, shards, device)


def _in_processes(out: Path, tier: Tier, shards: list[list], device: str | None) -> None:
    """Each non-empty shard in its own process, all at once; on Ctrl-C the shards are interrupted too (they
    resume)."""
    shards = [s for s in shards if s]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no CUDA state shared by a fork
    procs = [ctx.Process(target=_shard_main, args=(out, tier, items, device, f"{i + 1}/{len(shards)}"),
                         name=f"replicate shard {i + 1}/{len(shards)}") for i, items in enumerate(shards)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
        raise
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise QMambaError(f"replicate: {', '.join(failed)} failed (its log is above); the other shards' runs are "
                          "kept: run the same command again to resume")


def _run_items(out: Path, tier: Tier, items: list, device: str | None, world) -> None:
    """``("train", seed, spec)``: that training; ``("run", seed, cell)``: that run (``run_cell``)."""
    for i, (kind, seed, what) in enumerate(items):
        if kind == "train":
            ensure_trained(out, tier, what, seed, device)
            continue
        log.info("replicate: [%d/%d] %s/%s seed %d", i + 1, len(items), what.experiment, what.variant, seed)
        run_cell(out, tier, what, seed, world, device)


def _shard_main(out: Path, tier: Tier, items: list, device: str | None, name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s shard {name}: %(message)s", datefmt="%H:%M:%S")
    try:
        _run_items(out, tier, items, device, ensure_world(out, tier))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except QMambaError as e:  # a bad input or setting: its one line, as the command prints it
        log.error("%s", e)
        raise SystemExit(1) from None


def _check_tier(out: Path, tier: Tier) -> None:
    """A replication directory holds one tier's runs: its settings are written once and must match after."""
    path, settings = out / "tier.json", tier.settings()
    if path.is_file():
        have = json.loads(path.read_text())
        diff = {k: (have.get(k), v) for k, v in settings.items() if have.get(k) != v}
        if diff:
            text = ", ".join(f"{k}: {a} there, {b} now" for k, (a, b) in diff.items())
            raise ConfigError(f"{out} holds runs of other tier settings ({text}): use another --out or the same "
                              "settings")
    else:
        write_json_atomic(path, settings)


def _load_bench(path: str | None) -> dict | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--bench-json {p}: no such file (write one with 'qmamba bench --out {p}')")
    data = json.loads(p.read_text())
    if "vqa" not in data:
        raise ConfigError(f"--bench-json {p}: no 'vqa' section; run 'qmamba bench --only vqa --presets all'")
    return data
