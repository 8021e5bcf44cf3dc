"""Run configuration: typed dataclasses read from YAML, with dotted command-line overrides.

    qmamba train --config configs/qmamba-256.yaml stages.1.lr=1e-5 run.output_dir=runs/try2

A run is a model spec plus an ordered list of stages; a stage is data (its name picks what trains,
its defaults and its data format: ``qmamba.stages``), not a copy of code. The resolved config is
written to the run directory.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qmamba.errors import ConfigError
from qmamba.stages import STAGES
from qmamba.utils.config import config_from_dict, config_to_dict


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML alone reads ``1e-4`` (no dot) as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.inf|\.nan)$", re.IGNORECASE),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


@dataclass
class SourceConfig:
    path: str
    image_root: str | None = None
    weight: float = 1.0  # times each record is drawn per epoch (fractions draw a fixed subset)
    name: str | None = None  # default: the file's stem; must be unique within a stage


@dataclass
class StageConfig:
    name: str
    sources: list[SourceConfig] = field(default_factory=list)
    epochs: float = 1.0
    lr: float | None = None  # None: the stage's default (qmamba.stages)
    global_batch_size: int | None = None
    micro_batch_size: int = 8
    warmup_ratio: float = 0.03
    optimizer: str = "radam"  # the paper; "adamw" as Cobra
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    max_length: int = 2048
    max_steps: int | None = None  # stop early (quick looks, tests)
    group_by: str | None = "modality_length"
    num_workers: int = 2
    max_bad_fraction: float = 0.01

    def __post_init__(self):
        if self.name not in STAGES:
            raise ConfigError(f"stage name {self.name!r}; expected one of {sorted(STAGES)}")
        for key, value in STAGES[self.name].defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.optimizer not in ("radam", "adamw"):
            raise ConfigError(f"stage {self.name}: optimizer={self.optimizer!r}; use 'radam' or 'adamw'")
        self.betas = tuple(self.betas)


@dataclass
class ModelConfig:
    preset: str | None = None  # a preset name (random weights unless the parts below are given)
    init_from: str | None = None  # a multimodal model directory to start from (e.g. the align export)
    llm: str | None = None  # a pretrained Mamba LM directory
    vision: list[str] | str | None = None  # pretrained vision directory, or [dinov2, siglip]
    tokenizer: str | None = None  # default: init_from, else llm
    connector: dict = field(default_factory=dict)  # overrides of the preset's connector fields
    mamba_init: str | None = None  # Q-Mamba: copy its Mamba layers from this LM (e.g. mamba-130m)
    preprocess_init: str | None = None  # Q-Mamba: copy its preprocess connector from this VL-Mamba model


@dataclass
class RunOptions:
    output_dir: str = "runs/qmamba"
    seed: int = 0
    precision: str = "bf16"  # bf16 autocast over fp32 master weights on GPU; fp32 on CPU
    activation_checkpointing: bool = True
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 30.0
    keep_last: int = 2
    log_every: int = 1
    tensorboard: bool = True
    wandb: bool = False
    device: str | None = None

    def __post_init__(self):
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"run.precision={self.precision!r}; use 'bf16' or 'fp32'")


@dataclass
class TrainConfig:
    model: ModelConfig
    stages: list[StageConfig]
    run: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self):
        if not self.stages:
            raise ConfigError("a run needs at least one stage")

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir)


def parse_config(data: dict, where: str) -> TrainConfig:
    data = copy.deepcopy(data)
    for key in ("model", "stages"):
        if key not in data:
            raise ConfigError(f"{where}: missing section {key!r}")
    if not isinstance(data["stages"], list):
        raise ConfigError(f"{where}: 'stages' must be a list of stages")
    stages = []
    for i, s in enumerate(data["stages"]):
        s = dict(s)
        s["sources"] = [config_from_dict(SourceConfig, x, f"{where}: stages.{i}.sources") for x in s.get("sources", [])]
        stages.append(config_from_dict(StageConfig, s, f"{where}: stages.{i}"))
    unknown = set(data) - {"model", "stages", "run"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; expected model, stages, run")
    return TrainConfig(model=config_from_dict(ModelConfig, data["model"], f"{where}: model"), stages=stages,
                       run=config_from_dict(RunOptions, data.get("run", {}), f"{where}: run"))


def apply_overrides(data: dict, overrides: list[str], where: str = "command line") -> dict:
    """``a.b.0.c=value`` sets data['a']['b'][0]['c']; values are parsed as YAML (numbers, lists, null...)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = _child(node, part, key)
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = yaml_load(raw)
        else:
            node[last] = yaml_load(raw)
    return data


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {key!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _child(node, part: str, key: str):
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {key!r}: {part!r} is inside a value, not a section")
    return node.setdefault(part, {})


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return parse_config(apply_overrides(data, overrides or []), str(path))


def to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def replace(config: Any, **changes) -> Any:
    return dataclasses.replace(config, **changes)
