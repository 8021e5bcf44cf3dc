"""The paper's experiments as cells: (experiment, variant) -> what to train and how to evaluate it.

    table1   every connector of the micro-world: Cobra's MLP, VL-Mamba BSM (also evaluated forward- and
             backward-only, as the paper's Table 1 rows) and CSM, ML-Mamba, Q-Former, Q-Mamba at the paper's
             query proportions (128/256/512/729 of 729 patches, scaled to the tier's patches)
    table2   local vs global cross-attention mask (256-proportion queries)
    table3   bidirectional preprocessing from a trained VL-Mamba connector vs from scratch vs none
    table4   one model trained with bidirectional preprocessing (729-proportion queries), evaluated
             forward-only / backward-only / bidirectional; and a CSM-preprocessed one trained and evaluated as CSM
    queries  Q-Mamba across query counts: accuracy vs visual tokens (the Pareto plot)

A ``TrainSpec`` is one training configuration; cells that need the same one share its run (Table 2's local
cell is Table 1's 256-proportion Q-Mamba), and a spec whose preprocessing starts from a trained VL-Mamba
names that spec in ``preprocess_from`` (trained first, same seed). A cell's ``infer`` overrides the
connector config at evaluation only (the paper's inference-time scan switch, ``active_scans``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qmamba.errors import ConfigError
from qmamba.replicate.paper import PAPER_PATCHES, PAPER_QUERIES
from qmamba.replicate.tiers import Tier

EXPERIMENTS = ("table1", "table2", "table3", "table4", "queries")
TITLES = {
    "table1": "Table 1: connectors on the six micro-benchmarks",
    "table2": "Table 2: local vs global cross-attention",
    "table3": "Table 3: the bidirectional preprocessing connector's initialisation",
    "table4": "Table 4: scan order of the preprocessing at inference",
    "queries": "Query-count sweep: accuracy vs visual tokens",
}


@dataclass(frozen=True)
class TrainSpec:
    """One training configuration: a micro preset, connector overrides, and where preprocessing starts."""

    key: str  # its directory under <out>/train/
    preset: str
    connector: dict = field(default_factory=dict, hash=False)
    preprocess_from: TrainSpec | None = None  # a trained VL-Mamba whose connector initialises preprocessing


@dataclass(frozen=True)
class Cell:
    """One (experiment, variant): the spec it trains, the overrides it evaluates with, what the paper shows."""

    experiment: str
    variant: str
    label: str
    train: TrainSpec
    visual_tokens: int
    infer: dict = field(default_factory=dict, hash=False)  # connector overrides at evaluation only
    paper_row: str | None = None  # its row in paper.PAPER[experiment]
    bench_preset: str | None = None  # the full-size preset whose `qmamba bench` latency stands beside it

    @property
    def eval_key(self) -> str:
        """Cells with the same training and inference overrides share one evaluation (its directory name)."""
        return self.train.key + "".join(f"+{k}={v}" for k, v in _flat(self.infer))


def _flat(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in sorted(d.items()):
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", "-".join(map(str, v)) if isinstance(v, list) else str(v)))
    return out


def query_counts(n_patches: int) -> dict[int, int]:
    """{paper queries: queries for ``n_patches``}: the paper's 128/256/512/729 of 729, in proportion."""
    return {n: max(1, round(n_patches * n / PAPER_PATCHES)) for n in PAPER_QUERIES}


def sweep_counts(n_patches: int) -> list[int]:
    """The sweep's query counts: powers of two up to the patch count, and the paper's proportions."""
    powers = [2 ** i for i in range(2, n_patches.bit_length()) if 2 ** i <= n_patches]
    return sorted(set(powers) | set(query_counts(n_patches).values()))


class _Specs:
    """The tier's train specs; a spec's key names its configuration (``_check_keys`` holds it to that)."""

    def __init__(self, tier: Tier):
        self.tier = tier
        self.vlmamba = {s: TrainSpec(f"vlmamba-{s}", f"micro-vlmamba-{s}") for s in ("bsm", "csm")}

    def qmamba(self, n: int, attention: str = "local", init: str = "trained", scan: str = "bsm") -> TrainSpec:
        """Q-Mamba with ``n`` queries; preprocessing ``init``: trained (from VL-Mamba), scratch or none."""
        connector: dict = {"n_queries": n, "attention": attention}
        if init == "none":
            connector["preprocess"] = None
        elif scan != "bsm":
            connector["preprocess"] = {"type": "vlmamba", "variant": "vss-l2", "scan": scan, "d_state": 8}
        key = f"qmamba-{n}-{attention}-{init}" + ("" if scan == "bsm" else f"-{scan}")
        return TrainSpec(key, "micro-qmamba-32", connector, self.vlmamba[scan] if init == "trained" else None)


def _table1(s: _Specs, q: dict[int, int], p: int) -> list[Cell]:
    vl = s.vlmamba["bsm"]
    cells = [
        Cell("table1", "cobra", "Cobra (MLP)", TrainSpec("cobra", "micro-cobra"), p, paper_row="Cobra*",
             bench_preset="cobra"),
        Cell("table1", "vlmamba-bsm", "VL-Mamba BSM", vl, p, paper_row="VL-Mamba*", bench_preset="vlmamba-bsm"),
        Cell("table1", "vlmamba-bsm-forward", "VL-Mamba BSM, forward scan only", vl, p,
             {"active_scans": ["forward"]}, "VL-Mamba + forward scan only", "vlmamba-bsm"),
        Cell("table1", "vlmamba-bsm-backward", "VL-Mamba BSM, backward scan only", vl, p,
             {"active_scans": ["backward"]}, "VL-Mamba + backward scan only", "vlmamba-bsm"),
        Cell("table1", "vlmamba-csm", "VL-Mamba CSM", s.vlmamba["csm"], p, bench_preset="vlmamba-csm"),
        Cell("table1", "mlmamba", "ML-Mamba", TrainSpec("mlmamba", "micro-mlmamba"), p, bench_preset="mlmamba"),
        Cell("table1", "qformer", f"Q-Former, {q[256]} queries",
             TrainSpec(f"qformer-{q[256]}", "micro-qformer-32", {"n_queries": q[256]}), q[256],
             bench_preset="qformer-256"),
    ]
    cells += [Cell("table1", f"qmamba-{full}", f"Q-Mamba, {n} queries ({full}/729)", s.qmamba(n), n,
                   paper_row=f"Q-Mamba, {full} queries", bench_preset=f"qmamba-{full}") for full, n in q.items()]
    return cells


def _ablations(s: _Specs, q: dict[int, int]) -> list[Cell]:
    n2, n4 = q[256], q[729]
    scans = lambda which: {"preprocess": {"active_scans": which}}  # noqa: E731
    return [
        Cell("table2", "local", f"local mask, {n2} queries", s.qmamba(n2), n2, paper_row="Local"),
        Cell("table2", "global", f"global mask, {n2} queries", s.qmamba(n2, "global"), n2, paper_row="Global"),
        Cell("table3", "trained", "preprocessing from trained VL-Mamba", s.qmamba(n2), n2, paper_row="From Trained"),
        Cell("table3", "scratch", "preprocessing from scratch", s.qmamba(n2, init="scratch"), n2,
             paper_row="From Scratch"),
        Cell("table3", "none", "no preprocessing", s.qmamba(n2, init="none"), n2),
        Cell("table4", "forward", "trained bidirectional, forward scan only", s.qmamba(n4), n4, scans(["forward"]),
             "Forward Only"),
        Cell("table4", "backward", "trained bidirectional, backward scan only", s.qmamba(n4), n4,
             scans(["backward"]), "Backward Only"),
        Cell("table4", "bidirectional", "trained and evaluated bidirectional", s.qmamba(n4), n4,
             paper_row="Bidirectional"),
        Cell("table4", "csm", "CSM preprocessing, trained and evaluated as CSM", s.qmamba(n4, scan="csm"), n4),
    ]


def build_registry(tier: Tier) -> dict[str, list[Cell]]:
    """{experiment: its cells} for ``tier``, in report order."""
    s, q, p = _Specs(tier), query_counts(tier.n_patches), tier.n_patches
    cells = _table1(s, q, p) + _ablations(s, q)
    full = {n: f"qmamba-{paper}" for paper, n in q.items()}
    cells += [Cell("queries", f"q{n}", f"Q-Mamba, {n} queries", s.qmamba(n), n, bench_preset=full.get(n))
              for n in sweep_counts(p)]
    _check_keys(cells)
    return {e: [c for c in cells if c.experiment == e] for e in EXPERIMENTS}


def _check_keys(cells: list[Cell]) -> None:
    """Cells share a training run by its key: one key must mean one configuration."""
    seen: dict[str, TrainSpec] = {}
    for spec in (c.train for c in cells):
        while spec is not None:
            if seen.setdefault(spec.key, spec) != spec:
                raise ConfigError(f"train key {spec.key!r} names two configurations: {seen[spec.key]} and {spec}")
            spec = spec.preprocess_from


def select(registry: dict[str, list[Cell]], experiments: list[str] | None,
           presets: list[str] | None) -> list[Cell]:
    """The cells of ``experiments`` (default all) whose variant is in ``presets`` (default all)."""
    unknown = set(experiments or ()) - set(registry)
    if unknown:
        raise ConfigError(f"unknown experiment(s) {sorted(unknown)}; known: {', '.join(registry)}")
    cells = [c for e in (experiments or list(registry)) for c in registry[e]]
    if presets:
        known = {c.variant for c in cells}
        missing = set(presets) - known
        if missing:
            raise ConfigError(f"--presets {sorted(missing)} name no variant of the chosen experiments; "
                              f"known: {', '.join(sorted(known))}")
        cells = [c for c in cells if c.variant in presets]
    return cells
