"""Parity with transformers' MambaForCausalLM and Mamba2ForCausalLM, converting both ways:
a random HF model saved by transformers loads into qmamba with the same logits, and a qmamba
model saved with format='transformers' loads into transformers with the same logits."""

from __future__ import annotations

import pytest
import torch
from testing_utils import assert_close

from qmamba import MambaLM
from qmamba.infer import generate
from qmamba.models.mamba_lm import MambaLMConfig

transformers = pytest.importorskip("transformers")


def _hf_model(kind: str, n_groups: int = 1):
    torch.manual_seed(1)
    if kind == "mamba":
        cfg = transformers.MambaConfig(vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2,
                                       expand=2, conv_kernel=4, time_step_rank=4, tie_word_embeddings=True)
        model = transformers.MambaForCausalLM(cfg)
    else:
        cfg = transformers.Mamba2Config(vocab_size=96, hidden_size=32, state_size=16, num_hidden_layers=2,
                                        expand=2, num_heads=8, head_dim=8, n_groups=n_groups, chunk_size=8,
                                        tie_word_embeddings=False)
        model = transformers.Mamba2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("kind,groups", [("mamba", 1), ("mamba2", 1), ("mamba2", 2)])
def test_transformers_checkpoint_loads_with_same_logits(tmp_path, kind, groups):
    hf = _hf_model(kind, groups)
    hf.save_pretrained(tmp_path)
    ours = MambaLM.from_pretrained(tmp_path)
    ids = torch.randint(3, 96, (2, 21))  # no pad/bos/eos ids: transformers would infer a padding mask
    with torch.no_grad():
        assert_close(ours(ids).logits, hf(ids).logits, 1e-5, f"{kind} g{groups}")
        greedy_hf = hf.generate(ids[:, :5], max_new_tokens=8, do_sample=False)
    ours_greedy = generate(ours, ids[:, :5], max_new_tokens=8, eos_token_id=hf.generation_config.eos_token_id,
                                pad_token_id=hf.generation_config.pad_token_id)
    assert torch.equal(ours_greedy, greedy_hf)


@pytest.mark.parametrize("ssm_cfg", [
    {"layer": "Mamba1", "d_state": 8},
    {"layer": "Mamba2", "d_state": 16, "headdim": 8, "ngroups": 2, "chunk_size": 8},
], ids=["mamba1", "mamba2-g2"])
def test_qmamba_model_exported_to_transformers_gives_same_logits(tmp_path, ssm_cfg):
    ours = MambaLM(MambaLMConfig(d_model=32, n_layer=2, vocab_size=90, ssm_cfg=ssm_cfg)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.save_pretrained(tmp_path, format="transformers", dtype=torch.float32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 90, (2, 17))
    with torch.no_grad():
        assert_close(hf(ids).logits, ours(ids).logits, 1e-5)


@pytest.mark.parametrize("kind,groups", [("mamba", 1), ("mamba2", 2)])
def test_training_gradients_match_transformers(tmp_path, kind, groups):
    """The training path (the chunked scans' hand-written backwards on CPU): every parameter's gradient of a
    last-position loss, on the same weights, is transformers' own."""
    hf = _hf_model(kind, groups).train()
    hf.save_pretrained(tmp_path)
    ours = MambaLM.from_pretrained(tmp_path, dtype=torch.float32).train()
    ids = torch.randint(3, 96, (2, 37))  # 37: several chunks and a ragged last one
    for model in (ours, hf):
        logits = model(ids).logits.float()
        (logits[:, -1].logsumexp(-1) - logits[:, -1, 5]).mean().backward()
    theirs = dict(hf.named_parameters())
    from qmamba.models.hf_convert import mamba_ssm_to_hf_keys

    grads = mamba_ssm_to_hf_keys({n: p.grad for n, p in ours.named_parameters()})
    assert len(grads) >= 10 and set(grads) <= set(theirs)
    for name, g in grads.items():
        assert_close(g, theirs[name].grad, 1e-4, f"{kind} {name}")
