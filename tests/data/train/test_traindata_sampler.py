"""The grouped batch sampler: deterministic per (seed, epoch), one modality per batch where possible,
similar lengths in a batch, ranks disjoint and covering with equal batch counts, exact resume."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from qmamba.data.sampler import GroupedBatchSampler
from qmamba.errors import ConfigError


def _data(n: int, p_image: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 500, n).tolist(), (rng.random(n) < p_image).tolist()


def _sampler(n=103, bs=4, **kw) -> GroupedBatchSampler:
    lengths, has_image = _data(n)
    return GroupedBatchSampler(lengths, has_image, batch_size=bs, **{"seed": 0, **kw})


def _ranks(n=103, bs=4, world_size=3, epoch=0, **kw) -> list[list[list[int]]]:
    out = []
    for r in range(world_size):
        s = _sampler(n, bs, rank=r, world_size=world_size, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_same_seed_and_epoch_give_the_same_batches_others_differ():
    a, b = _sampler(), _sampler()
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(a) != list(_sampler())  # epoch 1 vs epoch 0
    assert list(_sampler(seed=1)) != list(_sampler(seed=0))
    assert list(_sampler(shuffle=False)) == list(_sampler(shuffle=False, seed=5))  # no shuffling: seed unused


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_each_batch_has_one_modality_when_the_counts_allow(world_size):
    step = 4 * world_size
    has_image = [True] * (3 * step) + [False] * (5 * step)
    lengths = list(range(len(has_image)))
    for r in range(world_size):
        s = GroupedBatchSampler(lengths, has_image, 4, seed=0, rank=r, world_size=world_size)
        for batch in s:
            assert len({has_image[i] for i in batch}) == 1, batch


@pytest.mark.parametrize("n, world_size", [(103, 1), (103, 3), (57, 2), (200, 4)])
def test_at_most_one_mixed_batch_per_epoch(n, world_size):
    _, has_image = _data(n)
    ranks = _ranks(n, 4, world_size)
    mixed = [b for batches in ranks for b in batches if len({has_image[i] for i in b}) > 1]
    assert len(mixed) <= 1, mixed
    modality = _ranks(n, 4, world_size, group_by="length")  # without modality grouping: many mixed
    assert sum(len({has_image[i] for i in b}) > 1 for bs in modality for b in bs) > 3


def _padding_waste(batches, lengths) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("group_by", ["length", "modality_length"])
def test_length_grouping_cuts_padding(group_by):
    lengths, _ = _data(400)
    grouped = _padding_waste(list(_sampler(400, 8, group_by=group_by)), lengths)
    random = _padding_waste(list(_sampler(400, 8, group_by=None)), lengths)
    assert grouped < 0.5 * random, (grouped, random)


def test_the_longest_item_comes_first():
    lengths, _ = _data(103)
    s = _sampler(group_by="length")
    first = next(iter(s))
    assert max(lengths) in [lengths[i] for i in first]


@pytest.mark.parametrize("n, bs, world_size, group_by", [
    (103, 4, 3, "modality_length"), (103, 4, 3, None), (96, 4, 4, "length"), (10, 4, 3, "modality_length"),
    (7, 2, 2, "length"), (29, 8, 1, "modality_length"),
])
def test_ranks_are_disjoint_cover_everything_and_have_equal_counts(n, bs, world_size, group_by):
    ranks = _ranks(n, bs, world_size, group_by=group_by)
    counts = {len(batches) for batches in ranks}
    assert len(counts) == 1 and counts == {len(_sampler(n, bs, world_size=world_size, group_by=group_by))}
    flat = [i for batches in ranks for b in batches for i in b]
    assert sorted(flat) == list(range(n))  # every item once: disjoint and covering
    assert all(0 < len(b) <= bs for batches in ranks for b in batches)


def test_fewer_tail_items_than_ranks_repeat_so_no_rank_is_empty():
    ranks = _ranks(n=9, bs=4, world_size=4, group_by="length")  # no full step of 16: the tail of 9 is split
    assert [len(b) for batches in ranks for b in batches] == [3, 2, 2, 2]
    ranks = _ranks(n=18, bs=4, world_size=4, group_by=None)  # 16 + a tail of 2 for 4 ranks
    assert [len(batches) for batches in ranks] == [2, 2, 2, 2]
    flat = [i for batches in ranks for b in batches for i in b]
    assert set(flat) == set(range(18)) and len(flat) == 20


def test_drop_last_gives_only_full_batches():
    ranks = _ranks(n=103, bs=4, world_size=3, drop_last=True)
    assert all(len(b) == 4 for batches in ranks for b in batches)
    assert [len(b) for b in ranks] == [8, 8, 8]  # 103 // 12 full steps
    with pytest.raises(ConfigError, match="no full step"):
        _sampler(n=5, bs=4, world_size=2, drop_last=True)


@pytest.mark.parametrize("n, bs, ws, group_by, drop_last", list(itertools.product(
    [1, 7, 48, 103], [1, 4, 16], [1, 3], ["modality_length", "length", None], [False, True])))
def test_len_matches_the_batches_yielded(n, bs, ws, group_by, drop_last):
    try:
        s = _sampler(n, bs, world_size=ws, group_by=group_by, drop_last=drop_last)
    except ConfigError:
        assert drop_last and n < bs * ws
        return
    assert len(list(s)) == len(s)


@pytest.mark.parametrize("done", [0, 1, 7, 13])
def test_resume_from_state_dict_continues_with_the_next_batch(done):
    full = _sampler(world_size=2, rank=1)
    full.set_epoch(2)
    reference = list(full)
    assert len(reference) == 13  # 103 items, 4 per batch, 2 ranks: 12 full steps and a tail of 7
    run = _sampler(world_size=2, rank=1)
    run.set_epoch(2)
    it = iter(run)
    seen = [next(it) for _ in range(done)]
    state = run.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == done
    restarted = _sampler(world_size=2, rank=1)
    restarted.load_state_dict(state)
    restarted.set_epoch(2)  # the loop's usual call keeps the loaded position
    assert seen + list(restarted) == reference
    assert list(restarted) == reference[done:]  # every iterator of the resumed epoch (DataLoader calls iter twice)
    restarted.set_epoch(3)
    nxt = _sampler(world_size=2, rank=1)
    nxt.set_epoch(3)
    assert list(restarted) == list(nxt)


class _Ids(Dataset):
    def __len__(self):
        return 103

    def __getitem__(self, i):
        return i


def test_resume_through_a_dataloader_uses_the_loops_count():
    def loader(sampler):
        return DataLoader(_Ids(), batch_sampler=sampler, num_workers=2, prefetch_factor=4,
                          collate_fn=functools.partial(torch.tensor, dtype=torch.long))
    reference = [b.tolist() for b in loader(_sampler())]
    s = _sampler()
    consumed = [b.tolist() for b, _ in zip(loader(s), range(5))]
    assert s.state_dict()["batches_done"] > 5  # the loader ran ahead of the loop
    restarted = _sampler()
    restarted.load_state_dict(s.state_dict(batches_done=5))
    assert consumed + [b.tolist() for b in loader(restarted)] == reference


def test_load_state_dict_refuses_a_different_global_batch():
    state = _sampler(world_size=2).state_dict(batches_done=3)
    with pytest.raises(ConfigError, match="saved with global_batch=8, this run has global_batch=4"):
        _sampler().load_state_dict(state)
    with pytest.raises(ConfigError, match="99 batches done"):
        _sampler().load_state_dict({"epoch": 0, "batches_done": 99})


@pytest.mark.parametrize("split", [(1, 4), (2, 2), (4, 1)])  # (world_size, accum) of the resumed run
def test_a_global_step_holds_the_same_items_however_it_is_split(split):
    """A run saved with 2 ranks x 2 micro-batches resumes with any split of the same global batch of 16."""
    world, accum = split

    def steps(sampler_for_rank, world, accum, epoch):
        per_rank = []
        for r in range(world):
            s = sampler_for_rank(r)
            per_rank.append(s.batches(epoch))
        n = len(per_rank[0]) // accum
        return [sorted(i for r in range(world) for b in per_rank[r][k * accum:(k + 1) * accum] for i in b)
                for k in range(n)]

    saved = steps(lambda r: _sampler(bs=4, world_size=2, rank=r, accum=2), 2, 2, epoch=1)
    other = steps(lambda r: _sampler(bs=16 // (world * accum), world_size=world, rank=r, accum=accum),
                  world, accum, epoch=1)
    assert other == saved
    state = _sampler(bs=4, world_size=2, rank=0, accum=2).state_dict(batches_done=6)  # 3 global steps
    resumed = _sampler(bs=16 // (world * accum), world_size=world, rank=0, accum=accum)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)
    assert state["steps_done"] == 3 and len(list(resumed)) == len(resumed) - 3 * accum


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="3 lengths but 2 has_image"):
        GroupedBatchSampler([1, 2, 3], [True, False], 2)
    with pytest.raises(ConfigError, match="group_by='modality'"):
        GroupedBatchSampler([1], [True], 2, group_by="modality")
    with pytest.raises(ConfigError, match="rank=2 is outside 0..1"):
        GroupedBatchSampler([1], [True], 2, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch_size=0"):
        GroupedBatchSampler([1], [True], 0)
