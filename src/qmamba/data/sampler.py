"""Batches of similar length and one modality, the same count on every rank, resumable mid-epoch.

    sampler = GroupedBatchSampler(ds.lengths, ds.has_image, batch_size=16, seed=0, rank=r, world_size=w, accum=a)
    DataLoader(ds, batch_sampler=sampler, collate_fn=...)

The plan of an epoch is made from (seed, epoch, global batch) alone and is the same on every rank. A global
step is one optimizer step: ``batch_size * world_size * accum`` items, cut into world_size x accum
micro-batches of ``batch_size``; rank r takes micro-batches r*accum ... r*accum + accum - 1 of each step.
The items of every global step depend on the global batch only, not on how it is split, so a run saved
with N processes resumes with M processes (accum scaled to keep the global batch) on the same data order.

1. groups: image items and text items (``group_by="modality_length"``, LLaVA's grouping), or all items
   as one group (``"length"`` or None);
2. each group is shuffled and cut into mega-batches of ``batch_size * world_size * mega_batch_mult``
   items; each mega-batch is sorted by length, longest first (not with ``group_by=None``), and cut into
   global steps, so the micro-batches of a step have similar lengths;
3. the leftovers of the groups (each fewer than one step) are joined, image items first, and cut into
   steps: at most one batch of the epoch mixes modalities;
4. the full steps are shuffled; with grouping, the step holding the longest item goes first (an
   out-of-memory shows at once, not hours in). The last partial step goes last: dropped with
   ``drop_last``, else split as evenly as possible over the ranks (items repeated only when there are
   fewer items than micro-batches), so every rank gets the same number of non-empty batches.

Resume: ``state_dict(batches_done)`` -> {"epoch", "steps_done", ...}; after ``load_state_dict`` every
iterator of that epoch starts at global step ``steps_done`` (later epochs start at 0). A DataLoader draws
batches ahead of the training loop, so the trainer passes the number of batches it consumed this epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from qmamba.errors import ConfigError

GROUP_BY = ("modality_length", "length", None)


class GroupedBatchSampler(Sampler[list[int]]):
    """Yields this rank's batches (lists of dataset indices) of the current epoch; see the module docstring."""

    def __init__(self, lengths: Sequence[int], has_image: Sequence[bool], batch_size: int, seed: int = 0,
                 shuffle: bool = True, group_by: str | None = "modality_length", drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, mega_batch_mult: int = 8, accum: int = 1):
        _check(lengths, has_image, batch_size, group_by, rank, world_size, mega_batch_mult, accum)
        self.lengths = np.asarray(lengths, dtype=np.int64)  # (n,)
        self.has_image = np.asarray(has_image, dtype=bool)  # (n,)
        self.batch_size, self.seed, self.shuffle, self.group_by = batch_size, seed, shuffle, group_by
        self.drop_last, self.rank, self.world_size, self.mega_batch_mult = drop_last, rank, world_size, mega_batch_mult
        self.accum = accum
        self.global_batch = batch_size * world_size * accum  # items per optimizer step
        self.epoch, self._yielded = 0, 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches_done) loaded by load_state_dict
        self._cache: tuple[int, list[list[int]]] | None = None
        if drop_last and len(self) == 0:
            raise ConfigError(f"GroupedBatchSampler: {len(self.lengths)} items make no full step of "
                              f"batch_size {batch_size} x world_size {world_size} x accum {accum} with drop_last; "
                              f"use drop_last=False or a smaller batch")

    # ---------------------------------------------------------------------------------------- plan
    def global_steps(self, epoch: int) -> list[list[np.ndarray]]:
        """Every micro-batch of ``epoch``: steps[s][k] is micro-batch k of global step s; rank r's are
        k = r * accum ... r * accum + accum - 1."""
        rng = np.random.default_rng([self.seed, epoch])
        step = self.global_batch
        full, leftovers = [], []
        for group in self._groups():
            items = self._order(group, rng)
            n_full = len(items) // step * step
            full += [items[k: k + step] for k in range(0, n_full, step)]
            leftovers.append(items[n_full:])
        rest = np.concatenate(leftovers)  # image leftovers first, then text
        n_full = len(rest) // step * step
        full += [rest[k: k + step] for k in range(0, n_full, step)]
        tail = rest[n_full:]
        full = self._order_steps(full, rng)
        parts = self.world_size * self.accum
        steps = [[s[k * self.batch_size: (k + 1) * self.batch_size] for k in range(parts)] for s in full]
        if len(tail) and not self.drop_last:
            if len(tail) < parts:  # too few to give every micro-batch one: repeat
                tail = np.resize(tail, parts)
            steps.append(np.array_split(tail, parts))
        return steps

    def _groups(self) -> list[np.ndarray]:
        idx = np.arange(len(self.lengths))
        if self.group_by == "modality_length":
            return [idx[self.has_image], idx[~self.has_image]]
        return [idx]

    def _order(self, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The group shuffled, then sorted by length (longest first) inside each mega-batch."""
        items = rng.permutation(group) if self.shuffle else group
        if self.group_by is None:
            return items
        mega = self.global_batch * self.mega_batch_mult
        chunks = [items[k: k + mega] for k in range(0, len(items), mega)]
        return np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks] or [items])

    def _order_steps(self, steps: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        if self.shuffle:
            steps = [steps[k] for k in rng.permutation(len(steps))]
        if self.group_by is not None and steps:
            first = int(np.argmax([self.lengths[s].max() for s in steps]))
            steps = [steps[first]] + steps[:first] + steps[first + 1:]
        return steps

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is None or self._cache[0] != epoch:
            mine = range(self.rank * self.accum, (self.rank + 1) * self.accum)
            plan = [[int(i) for i in step[k]] for step in self.global_steps(epoch) for k in mine]
            self._cache = (epoch, plan)
        return self._cache[1]

    # ----------------------------------------------------------------------------------- iteration
    def __len__(self) -> int:
        """Batches per rank in a whole epoch (also after a resume, which skips the first ones)."""
        step = self.global_batch
        counts = [int(self.has_image.sum()), int((~self.has_image).sum())] \
            if self.group_by == "modality_length" else [len(self.lengths)]
        n_full = sum(c // step for c in counts)
        rest = sum(c % step for c in counts)
        return self.accum * (n_full + rest // step + (0 if self.drop_last or rest % step == 0 else 1))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        start = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._yielded = start
        return self._iterate(batches, start)

    def _iterate(self, batches: list[list[int]], start: int) -> Iterator[list[int]]:
        for batch in batches[start:]:
            self._yielded += 1
            yield batch

    def set_epoch(self, epoch: int) -> None:
        """Switch to ``epoch``. A loaded resume position applies to its own epoch only: every iterator of
        that epoch starts there (a DataLoader may call ``iter`` more than once), other epochs from 0."""
        self.epoch = epoch

    def state_dict(self, batches_done: int | None = None) -> dict[str, int]:
        """The data-order position. ``batches_done``: batches of this epoch the training loop consumed
        (default: those this sampler yielded, which runs ahead of the loop inside a DataLoader)."""
        done = self._yielded if batches_done is None else int(batches_done)
        if done % self.accum:
            raise ConfigError(f"GroupedBatchSampler.state_dict: batches_done={done} is not a whole number of "
                              f"global steps of {self.accum} micro-batches; save between optimizer steps")
        return {"epoch": self.epoch, "steps_done": done // self.accum, "batches_done": done, "seed": self.seed,
                "global_batch": self.global_batch, "num_items": len(self.lengths)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``: the next iterator starts with global step ``steps_done`` of its epoch
        (``batches_done``, this rank's micro-batches, is taken too)."""
        mine = {"seed": self.seed, "global_batch": self.global_batch, "num_items": len(self.lengths)}
        for key, value in mine.items():
            if key in state and state[key] != value:
                raise ConfigError(f"GroupedBatchSampler.load_state_dict: the state was saved with {key}={state[key]}, "
                                  f"this run has {key}={value}; the data order cannot be continued exactly. "
                                  f"Resume with the same {key}, or drop '{key}' from the state to accept a new order")
        done = int(state["steps_done"]) * self.accum if "steps_done" in state else int(state["batches_done"])
        if not 0 <= done <= len(self):
            raise ConfigError(f"GroupedBatchSampler.load_state_dict: {done} batches done; an epoch here has "
                              f"{len(self)} batches")
        self.epoch, self._yielded = int(state["epoch"]), done
        self._resume = (self.epoch, done)


def _check(lengths, has_image, batch_size, group_by, rank, world_size, mega_batch_mult, accum) -> None:
    if len(lengths) != len(has_image):
        raise ConfigError(f"GroupedBatchSampler: {len(lengths)} lengths but {len(has_image)} has_image flags")
    if len(lengths) == 0:
        raise ConfigError("GroupedBatchSampler: no items (the dataset is empty)")
    if group_by not in GROUP_BY:
        raise ConfigError(f"GroupedBatchSampler: group_by={group_by!r}; expected one of {GROUP_BY}")
    for name, value in (("batch_size", batch_size), ("world_size", world_size), ("mega_batch_mult", mega_batch_mult),
                        ("accum", accum)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"GroupedBatchSampler: {name}={value!r}; expected an int >= 1")
    if not 0 <= rank < world_size:
        raise ConfigError(f"GroupedBatchSampler: rank={rank} is outside 0..{world_size - 1} (world_size={world_size})")
