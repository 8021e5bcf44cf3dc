"""The Mamba LM against ground truth: mamba_ssm fixtures (logits and greedy tokens), transformers'
MambaForCausalLM / Mamba2ForCausalLM (conversion both ways), and its own invariances
(token-by-token == full forward, left padding == each row alone, save/load round trips)."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import FIXTURES, MAMBA1, MAMBA2, assert_close
from testing_utils import tiny_lm as tiny

from qmamba import MambaLM
from qmamba.infer import generate
from qmamba.ops.mamba_inner import length_multiple, padding


@pytest.mark.parametrize("name", ["mamba1-tiny", "mamba2-tiny"])
def test_fixture_logits_and_greedy_tokens(name):
    ref = load_file(FIXTURES / name / "reference_outputs.safetensors")
    model = MambaLM.from_pretrained(FIXTURES / name)
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    # mamba_ssm's Triton SSD kernels multiply in TF32: ~7e-5 off fp64 for mamba2-tiny; our fp32 is ~5e-7 off it
    assert_close(logits, ref["logits"], 1e-4, f"{name} logits")
    out = generate(model, ref["input_ids"][:, :10], max_new_tokens=16)
    assert torch.equal(out, ref["greedy_sequences"]), f"{out}\n!=\n{ref['greedy_sequences']}"


@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2, {**MAMBA2, "ngroups": 2}], ids=["m1", "m2", "m2-g2"])
def test_token_by_token_equals_full_forward(ssm_cfg):
    model = tiny(ssm_cfg)
    ids = torch.randint(0, 97, (2, 19))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.allocate_inference_cache(2)
        prefix = model(ids[:, :7], cache=cache).logits  # prefill 7 tokens
        steps = [model(ids[:, t:t + 1], cache=cache).logits for t in range(7, 12)]  # 5 single steps
        rest = model(ids[:, 12:], cache=cache).logits  # then a chunk continuing from the state
    assert cache.seqlen_offset == 19
    assert_close(torch.cat([prefix, *steps, rest], 1), full, 1e-5, "cached vs full")


@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
def test_a_differentiated_cached_token_runs_as_a_prefill_of_one(ssm_cfg, monkeypatch):
    # the one-token step updates its state in place and its GPU kernels have no autograd: with gradients on, a
    # cached token must run as a length-1 prefill from the state, with the step's numbers and true gradients
    model = tiny(ssm_cfg).double()
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        _, prefix = model.prefill(ids[:, :8])  # one cache for every evaluation: the derivative holds it fixed

    def cached_token():
        return model(ids[:, 8:], cache=copy.deepcopy(prefix)).logits[:, -1].square().sum()

    first, last = model.backbone.layers[0].mixer, model.backbone.layers[-1].mixer
    checked = {"in_proj, first layer": first.in_proj.weight, "in_proj, last layer": last.in_proj.weight}
    eps, fd = 1e-2, {}
    with torch.no_grad():  # through the step (no gradients): the value, and a central difference per weight
        stepped = cached_token()
        for name, p in checked.items():
            i = (0,) * p.dim()
            p[i] += eps
            up = cached_token()
            p[i] -= 2 * eps
            fd[name] = ((up - cached_token()) / (2 * eps)).item()
            p[i] += eps
    for layer in model.backbone.layers:  # from here on the step must not run
        monkeypatch.setattr(layer.mixer, "step_with_norm", None)
        monkeypatch.setattr(layer.mixer, "step", None)
    loss = cached_token()
    assert_close(loss, stepped, 1e-6, "the step's value")  # A = -exp(A_log) and the scan state are fp32
    *grads, g_A = torch.autograd.grad(loss, [*checked.values(), first.A_log])
    for (name, p), grad in zip(checked.items(), grads):
        assert grad[(0,) * p.dim()].item() == pytest.approx(fd[name], rel=5e-3, abs=1e-6), name  # fp32 inside
    assert g_A.abs().sum() > 0  # through the cached state's decay


def _padding_lengths(monkeypatch) -> list[int]:
    """Record the length each Mamba-1 mixer's projections run at."""
    from qmamba.models import mamba1

    seen, inner = [], mamba1.linear_channels_first

    def spy(hidden, linear):
        seen.append(hidden.shape[1])
        return inner(hidden, linear)
    monkeypatch.setattr(mamba1, "linear_channels_first", spy)
    return seen


ON_GPU = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", ON_GPU])
@pytest.mark.parametrize("left_pad", [False, True])
def test_mamba1_odd_prefill_runs_right_padded_with_the_same_outputs_and_state(left_pad, device, monkeypatch):
    # an odd length is right-padded to a multiple of 16 or 8 (aligned rows for the GEMMs and the scan); the padding
    # must change neither the logits nor the state the next token continues from (on a GPU: the Triton scan
    # takes dt = -inf on the padding)
    model = tiny(MAMBA1).to(device)
    ids = torch.randint(1, 97, (2, 19), device=device)
    mask = torch.ones_like(ids)
    if left_pad:
        ids[1, :3], mask[1, :3] = 0, 0
    seen = _padding_lengths(monkeypatch)
    monkeypatch.setattr(padding, "PAD_LENGTHS", True)  # on a CPU too

    def run():
        cache = model.allocate_inference_cache(2)
        with torch.no_grad():
            prompt = model(ids, attention_mask=mask if left_pad else None, cache=cache).logits
            nxt = model(ids[:, -1:], cache=cache).logits
        states = [t for layer in cache.layers for t in (layer.conv_state, layer.ssm_state)]
        return [prompt, nxt, *states]

    padded = run()
    m = length_multiple(2, 64, 8, grad=False)  # 16 with Triton (the chunked scan), else 8
    assert seen == [-(-19 // m) * m] * 2  # both layers ran padded
    monkeypatch.setattr(padding, "PAD_LENGTHS", False)
    plain = run()
    assert seen[2:] == [19, 19]
    for i, (a, b) in enumerate(zip(padded, plain)):
        assert_close(a, b, 1e-5, f"output {i}")


def test_mamba1_right_padding_keeps_training_gradients(monkeypatch):
    model = tiny(MAMBA1).double()
    ids = torch.randint(0, 97, (2, 21))
    seen = _padding_lengths(monkeypatch)
    monkeypatch.setattr(padding, "PAD_LENGTHS", True)

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    padded = grads()
    monkeypatch.setattr(padding, "PAD_LENGTHS", False)
    plain = grads()
    m = length_multiple(2, 64, 8, grad=True)
    assert seen == [-(-21 // m) * m] * 2 + [21, 21]
    for (name, _), a, b in zip(model.named_parameters(), padded, plain):
        assert_close(a, b, 1e-6, name)  # the scan state is fp32 inside


def test_a_mamba1_stack_pads_a_sequence_once(monkeypatch):
    # the stack pads the embeddings and the mask once and crops once; every layer runs the padded sequence as it is
    model = tiny(MAMBA1, n_layer=4)
    ids = torch.randint(1, 97, (2, 19))
    seen = _padding_lengths(monkeypatch)
    pads, inner = [], torch.nn.functional.pad

    def spy(t, pad, *args, **kwargs):
        pads.append(tuple(pad))
        return inner(t, pad, *args, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "pad", spy)
    monkeypatch.setattr(padding, "PAD_LENGTHS", True)
    with torch.no_grad():
        logits = model(ids, attention_mask=torch.ones_like(ids), cache=model.allocate_inference_cache(2)).logits
    m = length_multiple(2, 64, 8, grad=False)
    k = -(-19 // m) * m - 19
    assert logits.shape[:2] == (2, 19) and seen == [19 + k] * 4
    assert [p for p in pads if p in ((0, 0, 0, k), (0, k))] == [(0, 0, 0, k), (0, k)]  # the embeddings, the mask


def test_a_mamba1_mixer_on_its_own_pads_its_sequence(monkeypatch):
    # outside a stack (Q-Mamba's queries) the mixer pads and crops the sequence itself, with the same outputs
    mixer = tiny(MAMBA1).backbone.layers[0].mixer
    hidden = torch.randn(2, 19, 32)
    seen = _padding_lengths(monkeypatch)
    monkeypatch.setattr(padding, "PAD_LENGTHS", True)
    with torch.no_grad():
        padded = mixer(hidden)
        monkeypatch.setattr(padding, "PAD_LENGTHS", False)
        plain = mixer(hidden)
    assert seen == [-(-19 // length_multiple(2, 64, 8, grad=False)) * length_multiple(2, 64, 8, grad=False), 19]
    assert_close(padded, plain, 1e-5, "output")


@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
def test_left_padded_batch_equals_each_row_alone(ssm_cfg):
    model = tiny(ssm_cfg)
    rows = [torch.randint(1, 97, (n,)) for n in (11, 4, 1)]
    L = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):], mask[i, L - len(r):] = r, 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        gen = generate(model, ids, attention_mask=mask, max_new_tokens=6)
        for i, r in enumerate(rows):
            alone = model(r[None]).logits[0]
            assert_close(batched[i, L - len(r):], alone, 1e-5, f"row {i}")
            gen_alone = generate(model, r[None], max_new_tokens=6)[0, len(r):]
            assert torch.equal(gen[i, L:], gen_alone), f"row {i}: {gen[i, L:]} vs {gen_alone}"


@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("safe", [True, False])
def test_save_load_round_trip(tmp_path, ssm_cfg, tie, safe):
    model = tiny(ssm_cfg, tie_embeddings=tie)
    model.save_pretrained(tmp_path, safe_serialization=safe, dtype=torch.float32)
    loaded = MambaLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert (loaded.lm_head.weight is loaded.backbone.embedding.weight) == tie


def test_loss_ignores_masked_labels_and_counts_targets():
    model = tiny(MAMBA1)
    ids = torch.randint(0, 97, (2, 8))
    labels = ids.clone()
    labels[0, :5] = -100
    out = model(ids, labels=labels)
    logp = out.logits[:, :-1].log_softmax(-1)
    tgt = labels[:, 1:]
    keep = tgt != -100
    expected = -logp[keep].gather(-1, tgt[keep][:, None]).mean()
    assert out.n_target_tokens == int(keep.sum()) == 3 + 7  # row 0: targets at 5, 6, 7
    assert_close(out.loss, expected, 1e-6)
    assert_close(model(ids, labels=labels, reduction="sum").loss, expected * 10, 1e-6)


def test_inputs_embeds_equals_input_ids():
    model = tiny(MAMBA2)
    ids = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(inputs_embeds=model.embed(ids)).logits)


def test_sampling_is_seeded_and_respects_top_k_one():
    model = tiny(MAMBA1)
    ids = torch.randint(0, 97, (2, 5))
    greedy = generate(model, ids, max_new_tokens=8)
    assert torch.equal(generate(model, ids, max_new_tokens=8, do_sample=True, top_k=1), greedy)
    a = generate(model, ids, max_new_tokens=8, do_sample=True, temperature=2.0, seed=3)
    b = generate(model, ids, max_new_tokens=8, do_sample=True, temperature=2.0, seed=3)
    assert torch.equal(a, b)
    assert int(a.max()) < 97  # vocabulary padding (97 -> 104) is never sampled


def test_eos_stops_rows_and_pads_them():
    model = tiny(MAMBA1)
    ids = torch.randint(0, 97, (1, 5))
    greedy = generate(model, ids, max_new_tokens=6)[0, 5:]
    eos = int(greedy[2])
    out = generate(model, ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)[0, 5:]
    first = int((greedy == eos).nonzero()[0])
    assert out.tolist() == greedy[: first + 1].tolist()  # stops right after the first eos
