"""One stage of training: data, optimizer and schedule, the step loop with token-normalised gradient
accumulation, periodic atomic checkpoints, exact resume, metrics, and the exported model.

The loss of an optimizer step is the mean over every target token of the whole accumulated global
batch (all micro-batches, all ranks), not a mean of per-micro-batch means: each micro-batch's summed
loss is divided by the step's total target-token count before its backward pass.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.data.collate import collate, with_image_row
from qmamba.data.dataset import ConversationDataset, DataSource
from qmamba.data.image import MultiImageTransform
from qmamba.data.sampler import GroupedBatchSampler
from qmamba.errors import ConfigError, InputError
from qmamba.stages import STAGES, apply_stage
from qmamba.train import checkpoint as ckpt
from qmamba.train.build import build_model
from qmamba.train.config import StageConfig, TrainConfig
from qmamba.train.distributed import DistEnv, all_reduce_sum, barrier
from qmamba.train.metrics import MetricsLogger
from qmamba.train.optim import build_optimizer, build_scheduler
from qmamba.train.parallelize import apply_activation_checkpointing, apply_fsdp

log = logging.getLogger("qmamba")


class StageTrainer:
    def __init__(self, cfg: TrainConfig, index: int, env: DistEnv, start_from: Path | None):
        self.cfg, self.stage, self.env = cfg, cfg.stages[index], env
        self.dir = cfg.output_dir / f"{index}-{self.stage.name}"
        self.bf16 = cfg.run.precision == "bf16" and env.device.type == "cuda"
        self.model, self.tokenizer = build_model(cfg.model, start_from, cfg.run.seed)
        self.trainable = apply_stage(self.model, self.stage.name)
        self._setup_data()
        self._place_model()
        self.optimizer = build_optimizer(self.model, self.stage)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, self.stage.warmup_ratio)
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "bad": [], "seen": 0, "tokens": 0, "elapsed": 0.0}

    # ----------------------------------------------------------------- setup
    def _setup_data(self) -> None:
        s, m = self.stage, self.model
        sources = [DataSource(x.path, x.image_root, x.weight, x.name) for x in s.sources]
        if not sources:
            raise ConfigError(f"stage {s.name}: no data sources (stages.N.sources)")
        self.dataset = ConversationDataset(
            sources, self.tokenizer, MultiImageTransform(m.vision.config.transforms),
            chat_template=m.config.chat_template, image_position=m.config.image_position, max_length=s.max_length,
            stage=STAGES[s.name].data_format, seed=self.cfg.run.seed)
        world = self.env.world_size
        if s.global_batch_size % (s.micro_batch_size * world):
            raise ConfigError(f"stage {s.name}: global_batch_size {s.global_batch_size} is not a multiple of "
                              f"micro_batch_size {s.micro_batch_size} x {world} process(es)")
        self.accum = s.global_batch_size // (s.micro_batch_size * world)
        self.sampler = GroupedBatchSampler(self.dataset.lengths, self.dataset.has_image, s.micro_batch_size,
                                           seed=self.cfg.run.seed, group_by=s.group_by, rank=self.env.rank,
                                           world_size=world, accum=self.accum)
        steps_per_epoch = len(self.sampler) // self.accum
        if steps_per_epoch < 1:
            raise ConfigError(f"stage {s.name}: {len(self.dataset)} samples make no full global batch of "
                              f"{s.global_batch_size}; lower global_batch_size or add data")
        self.total_steps = max(1, math.ceil(s.epochs * steps_per_epoch))
        if s.max_steps:
            self.total_steps = min(self.total_steps, s.max_steps)
        self.load_bad = len(self.dataset.bad_records)
        self.allowed_bad = math.floor(s.max_bad_fraction * self.dataset.n_records)
        for bad in self.dataset.bad_records[:20]:
            log.warning("skipped record: %s", bad)

    def _place_model(self) -> None:
        self.model.to(self.env.device)
        if self.bf16 and self.model.vision.frozen:
            self.model.vision.to(torch.bfloat16)  # frozen: no master weights needed
        if self.cfg.run.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        if self.env.distributed:
            apply_fsdp(self.model, self.env, self.bf16)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.state["epoch"])
        steps_done = self.state["batch_in_epoch"] // self.accum  # saved between optimizer steps: a whole number
        self.sampler.load_state_dict({"epoch": self.state["epoch"], "steps_done": steps_done})
        return DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=self.stage.num_workers,
                          collate_fn=functools.partial(collate, pad_token_id=self.pad_id))

    def _batches(self):
        """Micro-batches forever, epoch after epoch, counting what the loop consumed (not what workers prefetched)."""
        pixel_shape = (self.dataset.transform.num_channels,) + (self.model.vision.config.image_size,) * 2
        while True:
            for batch in self._loader():
                self.state["batch_in_epoch"] += 1
                if self.env.distributed or batch["input_ids"].shape[0] == 0:
                    # every rank runs vision + connector in every micro-batch (FSDP collectives stay in step)
                    batch = with_image_row(batch, pixel_shape, self.pad_id)
                yield batch
            self.state["epoch"] += 1
            self.state["batch_in_epoch"] = 0

    # ------------------------------------------------------------------ steps
    def _count_bad(self, batch: dict) -> None:
        self.state["seen"] += len(batch.get("bad", [])) + batch["input_ids"].shape[0] - batch.get("dummy_rows", 0)
        for source, rid, reason in batch.get("bad", []):
            key = f"{source}:{rid}"
            if key not in self.state["bad"]:  # each bad sample counts once, however many epochs meet it
                self.state["bad"].append(key)
                log.warning("skipped sample %s of %s: %s", rid, source, reason)
        n_bad = len(self.state["bad"]) + self.load_bad
        if n_bad > self.allowed_bad:
            raise InputError(
                f"stage {self.stage.name}: {n_bad} bad samples (malformed records, "
                f"missing or corrupt images) exceed max_bad_fraction={self.stage.max_bad_fraction} of "
                f"{self.dataset.n_records} records; fix the data or raise stages.N.max_bad_fraction "
                f"(the warnings above name each file and record)")

    def _step(self, micro: list[dict]) -> dict:
        """One optimizer step over ``micro`` (this rank's micro-batches of the global batch)."""
        n_total = all_reduce_sum(sum(b["n_target_tokens"] for b in micro), self.env)
        loss_sum, tokens = 0.0, 0
        autocast = torch.autocast("cuda", torch.bfloat16) if self.bf16 and not self.env.distributed else nullcontext()
        for i, batch in enumerate(micro):
            if self.env.distributed:
                self.model.set_requires_gradient_sync(i == len(micro) - 1)
            inputs = {k: batch[k].to(self.env.device) for k in ("input_ids", "attention_mask", "labels",
                                                                  "pixel_values") if k in batch}
            with autocast:
                out = self.model(**inputs, padding_side="right", reduction="sum")
            # FSDP averages gradients over ranks, hence the world-size factor
            (out.loss * self.env.world_size / max(n_total, 1.0)).backward()
            loss_sum += float(out.loss.detach())
            n_images = int((inputs["input_ids"] == IMAGE_TOKEN_ID).sum()) - batch.get("dummy_rows", 0)
            tokens += int(inputs["attention_mask"].sum()) - batch.get("dummy_rows", 0) + (
                self.model.num_visual_tokens - 1) * n_images
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        for p in trainable:  # a parameter the loss did not reach (e.g. a bias that cancels in a softmax) still
            if p.grad is None:  # gets optimizer state: resuming expects a state for every trainable parameter
                p.grad = torch.zeros_like(p)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.stage.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        return {"loss": all_reduce_sum(loss_sum, self.env) / max(n_total, 1.0), "grad_norm": float(grad_norm),
                "tokens": all_reduce_sum(tokens, self.env), "target_tokens": n_total}

    # ----------------------------------------------------------- checkpoints
    @property
    def ckpt_root(self) -> Path:
        return self.dir / "checkpoints"

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.ckpt_root)
        if path is None:
            return
        trainer = ckpt.load_checkpoint(path, self.model, self.optimizer, self.env)
        self.scheduler.load_state_dict(trainer.pop("scheduler"))
        saved_accum = trainer.pop("accum", self.accum)  # another number of processes splits a step differently
        trainer["batch_in_epoch"] = trainer["batch_in_epoch"] // saved_accum * self.accum
        self.state.update(trainer)
        log.info("stage %s: resumed from %s (step %d)", self.stage.name, path.name, self.state["step"])

    def _save(self) -> None:
        state = {**self.state, "scheduler": self.scheduler.state_dict(), "accum": self.accum}
        path = ckpt.save_checkpoint(self.ckpt_root, self.state["step"], self.model, self.optimizer, state,
                                    self.env, keep_last=self.cfg.run.keep_last)
        self._last_save = time.monotonic()
        log.info("stage %s: checkpoint %s", self.stage.name, path)

    def _due(self) -> bool:
        r = self.cfg.run
        by_steps = r.checkpoint_every_steps > 0 and self.state["step"] % r.checkpoint_every_steps == 0
        elapsed = time.monotonic() - self._last_save
        by_time = r.checkpoint_every_minutes > 0 and elapsed > 60 * r.checkpoint_every_minutes
        return all_reduce_sum(float(by_steps or by_time), self.env) > 0  # every rank decides the same

    def export(self) -> Path:
        """Write the trained model (full weights, tokenizer, configs) to ``<stage_dir>/model``."""
        out = self.dir / "model"
        if self.env.distributed:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = self.model.state_dict()
        if self.env.is_main:
            self.model.save_pretrained(out, tokenizer=self.tokenizer, state_dict=state, dtype=torch.float32)
            (self.dir / "DONE").write_text(f"{self.state['step']}\n")
        barrier(self.env)
        return out

    # ------------------------------------------------------------------- run
    def run(self) -> Path:
        self._resume()
        s, env = self.stage, self.env
        metrics = MetricsLogger(self.dir, env.is_main, self.cfg.run.tensorboard, self.cfg.run.wandb,
                                resume_step=self.state["step"], run_name=f"{self.dir.parent.name}/{self.dir.name}")
        self.model.train()
        batches, self._last_save = self._batches(), time.monotonic()
        bar = tqdm(total=self.total_steps, initial=self.state["step"], disable=not env.is_main,
                   desc=f"{s.name}", unit="step", dynamic_ncols=True)
        while self.state["step"] < self.total_steps:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(self.accum)]
            for b in micro:
                self._count_bad(b)
            out = self._step(micro)
            dt = time.perf_counter() - t0
            self.state["step"] += 1
            self.state["tokens"] += out["tokens"]
            self.state["elapsed"] += dt
            row = {"loss": out["loss"], "lr": self.scheduler.get_last_lr()[0], "grad_norm": out["grad_norm"],
                   "tokens_per_s": out["tokens"] / dt, "step_time_s": dt, "epoch": self.state["epoch"],
                   "bad_samples": len(self.state["bad"]) + self.load_bad}
            if torch.cuda.is_available() and env.device.type == "cuda":
                row["peak_memory_gb"] = torch.cuda.max_memory_allocated(env.device) / 2**30
            if self.state["step"] % self.cfg.run.log_every == 0 or self.state["step"] == self.total_steps:
                metrics.log(self.state["step"], row)
            bar.set_postfix(loss=f"{out['loss']:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            if self._due() and self.state["step"] < self.total_steps:
                self._save()
        bar.close()
        self._save()
        metrics.close(f"{self.dir.parent.name}: {s.name}")
        return self.export()


def run_stage(cfg: TrainConfig, index: int, env: DistEnv, start_from: Path | None) -> Path:
    """Train stage ``index`` (or find it done) and return its exported model directory."""
    stage_dir = cfg.output_dir / f"{index}-{cfg.stages[index].name}"
    if (stage_dir / "DONE").is_file() and (stage_dir / "model" / "config.json").is_file():
        log.info("stage %s: already done (%s)", cfg.stages[index].name, stage_dir / "model")
        return stage_dir / "model"
    return StageTrainer(cfg, index, env, start_from).run()


def stage_summary(stage: StageConfig) -> str:
    return (f"{stage.name}: lr {stage.lr:g}, global batch {stage.global_batch_size} "
            f"(micro {stage.micro_batch_size}), {stage.epochs:g} epoch(s), {stage.optimizer}")
