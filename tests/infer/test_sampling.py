"""Sampling filters against hand-computed values, and the generation loop's stopping rules."""

from __future__ import annotations

import math

import pytest
import torch
from testing_utils import tiny_tokenizer

from qmamba.errors import ConfigError
from qmamba.infer import GenerationConfig, generate, stream, stream_text
from qmamba.infer.sampling import SamplingConfig, apply_repetition_penalty, filter_top_k, filter_top_p, next_tokens
from qmamba.models.mamba_lm import MambaLM, MambaLMConfig

NEG = float("-inf")


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    assert filter_top_k(logits, 2).tolist() == [[NEG, 5.0, NEG, 4.0]]
    assert filter_top_k(logits, 0).tolist() == logits.tolist()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = filter_top_p(logits, 0.8).isfinite().tolist()[0]
    assert kept == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert filter_top_p(logits, 0.81).isfinite().tolist()[0] == [True, True, True, False]
    assert filter_top_p(logits, 0.1).isfinite().tolist()[0] == [True, False, False, False]  # at least one


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -2.0, 3.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 3.0]]


def test_temperature_sampling_follows_the_distribution():
    logits = torch.tensor([[math.log(0.7), math.log(0.3)]]).repeat(20000, 1)
    seen = torch.zeros_like(logits, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    toks = next_tokens(logits, seen, SamplingConfig(do_sample=True, temperature=1.0), g)
    assert abs(toks.float().mean().item() - 0.3) < 0.02
    cold = next_tokens(logits, seen, SamplingConfig(do_sample=True, temperature=0.05), g)
    assert cold.float().mean().item() < 0.01


def test_invalid_settings_are_refused():
    with pytest.raises(ConfigError, match="temperature"):
        SamplingConfig(temperature=0)
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def _lm(vocab: int) -> MambaLM:
    return MambaLM(MambaLMConfig(d_model=32, n_layer=2, vocab_size=vocab, ssm_cfg={"d_state": 8})).eval()


def test_stop_strings_end_rows_and_streaming_matches_generate():
    tok = tiny_tokenizer()
    lm = _lm(len(tok))
    ids = torch.tensor([tok.encode("what is the")])
    full = generate(lm, ids, max_new_tokens=12)[0, ids.shape[1]:]
    words = tok.decode(full[:4]).split()
    stop = words[-1]
    out = generate(lm, ids, max_new_tokens=12, stop_strings=[stop], tokenizer=tok)[0, ids.shape[1]:]
    first = next(i for i in range(1, len(full) + 1) if stop in tok.decode(full[:i]))
    assert out.tolist() == full[:first].tolist()
    text = "".join(stream_text(stream(lm, ids, max_new_tokens=12), tok))
    assert text.strip() == tok.decode(full, skip_special_tokens=True).strip()
    with pytest.raises(ConfigError, match="tokenizer"):
        generate(lm, ids, max_new_tokens=3, stop_strings=["x"])


def test_cache_memory_does_not_grow_with_generated_length():
    lm = _lm(50)
    cache = lm.allocate_inference_cache(1)
    sizes = {(s.conv_state.numel(), s.ssm_state.numel()) for s in cache.layers}
    lm(torch.randint(0, 50, (1, 7)), cache=cache)
    for _ in range(20):
        lm(torch.randint(0, 50, (1, 1)), cache=cache)
    assert {(s.conv_state.numel(), s.ssm_state.numel()) for s in cache.layers} == sizes
    assert cache.seqlen_offset == 27
