"""What a training run reports: metrics.jsonl (one line per logged step), TensorBoard and W&B when
asked for and installed, and a loss-curve PNG at the end of each stage."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qmamba.utils.plot import line_plot, smooth

log = logging.getLogger("qmamba")


class MetricsLogger:
    def __init__(self, stage_dir: Path, enabled: bool, tensorboard: bool, wandb: bool, resume_step: int = 0,
                 run_name: str = "qmamba"):
        self.path = stage_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = self.wandb = None
        if not enabled:
            return
        stage_dir.mkdir(parents=True, exist_ok=True)
        _truncate_after(self.path, resume_step)  # a resumed run rewrites the steps after its checkpoint
        if tensorboard:
            self.tb = _tensorboard(stage_dir / "tensorboard")
        if wandb:
            self.wandb = _wandb(run_name, stage_dir)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def close(self, title: str) -> Path | None:
        if not self.enabled:
            return None
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        return plot_loss(self.path, self.path.with_name("loss.png"), title)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(metrics_path: Path, png_path: Path, title: str) -> Path | None:
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    if not rows:
        return None
    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    series = {"loss": (steps, losses)}
    if len(rows) >= 20:
        series[f"mean of {max(2, len(rows) // 20)}"] = (steps, smooth(losses, max(2, len(rows) // 20)))
    return line_plot(png_path, series, title, "optimizer step", "loss")


def _truncate_after(path: Path, step: int) -> None:
    if path.is_file():
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tensorboard(logdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install tensorboard); metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(logdir))


def _wandb(name: str, stage_dir: Path):
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed (pip install wandb); metrics go to metrics.jsonl only")
        return None
    return wandb.init(project="qmamba", name=name, dir=str(stage_dir))
