"""``replicate``: every selected cell at every seed, skipping finished ones, then the report.

Runs go seed by seed (all cells at the first seed, then the second, ...), so an interrupted replication
already has one score per cell to show. A run that fails stops the replication with its error; running the
same command again resumes it (``run.py`` says how each step resumes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from qmamba.errors import ConfigError
from qmamba.replicate.registry import build_registry, select
from qmamba.replicate.report import write_report
from qmamba.replicate.run import RESULT, cell_dir, ensure_world, run_cell, write_json_atomic
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


def replicate(opts: ReplicateOptions) -> dict:
    """Run what is missing and write the report; returns report.json's data (plus ``"ran"``: the runs done now)."""
    tier = get_tier(opts.tier) if isinstance(opts.tier, str) else opts.tier
    tier.check()
    tier = tier.resolved()
    if opts.seeds < 1:
        raise ConfigError(f"--seeds {opts.seeds}: need at least one seed")
    bench = _load_bench(opts.bench_json)
    cells = select(build_registry(tier), opts.experiments, opts.presets)
    out, seeds = Path(opts.out), list(range(opts.seeds))
    out.mkdir(parents=True, exist_ok=True)
    _check_tier(out, tier)
    world = ensure_world(out, tier)
    todo = [(seed, c) for seed in seeds for c in cells if not (cell_dir(out, c, seed) / RESULT).is_file()]
    log.info("replicate: %d cell(s) x %d seed(s); %d run(s) finished, %d to run", len(cells), len(seeds),
             len(cells) * len(seeds) - len(todo), len(todo))
    ran = []
    for i, (seed, cell) in enumerate(todo):
        log.info("replicate: [%d/%d] %s/%s seed %d", i + 1, len(todo), cell.experiment, cell.variant, seed)
        run_cell(out, tier, cell, seed, world, opts.device)
        ran.append(f"{cell.experiment}/{cell.variant}/seed{seed}")
    report = write_report(out, tier.name, cells, seeds, bench, settings=tier.settings(),
                          heldout_style=tier.heldout_style)
    return {**report, "ran": ran}


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
