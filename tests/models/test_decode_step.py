"""The one decode path: ``MambaLM.step`` (embedding, every ``Block.step``, final norm, head) continues
``MambaLM.prefill`` with the logits of the full forward, through the fused add-norm step of plain RMSNorm blocks
and through the unfused route of blocks with an MLP or a LayerNorm; the fixed-layout splice equals the general one."""

from __future__ import annotations

import pytest
import torch
from testing_utils import MAMBA1, MAMBA2, assert_close
from testing_utils import tiny_lm as tiny

from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.models.splice import IMAGE_TOKEN_ID, image_column, splice_at_column, splice_visual_tokens


@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
@pytest.mark.parametrize("block", ["fused", "mlp", "layernorm"])
def test_prefill_then_steps_equal_the_full_forward(ssm_cfg, block, monkeypatch):
    extra = {"mlp": {"d_intermediate": 64}, "layernorm": {"rms_norm": False}}.get(block, {})
    model = tiny(ssm_cfg, **extra)
    if block != "fused":  # these blocks must take the unfused route
        for layer in model.backbone.layers:
            monkeypatch.setattr(layer.mixer, "step_with_norm", None)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids).logits  # (2, 12, v)
        logits, cache = model.prefill(ids[:, :8])
        steps = [logits]
        for t in range(8, 12):
            steps.append(model.step(ids[:, t], cache))
    assert cache.seqlen_offset == 12
    assert_close(torch.stack(steps, 1), full[:, 7:], 1e-5, f"{block}: prefill + steps vs full forward")


def test_prefill_fills_the_cache_it_is_given():
    model = tiny(MAMBA1)
    ids = torch.randint(0, 97, (3, 7))
    given = model.allocate_inference_cache(4)
    with torch.no_grad():
        want, fresh = model.prefill(ids)
        got, cache = model.prefill(ids, cache=given.first_rows(3))
    assert_close(got, want, 1e-6, "logits")
    for a, b in zip(given.layers, fresh.layers):  # written through the row views into the larger buffers
        assert torch.equal(a.ssm_state[:3], b.ssm_state) and torch.equal(a.conv_state[:3], b.conv_state)
        assert not a.ssm_state[3:].any()


@pytest.mark.parametrize("column", [0, 3])
def test_the_fixed_layout_splice_equals_the_general_splice(column):
    model = MultimodalModel(get_preset("tiny-qmamba-128")).eval()
    ids = torch.randint(0, model.config.llm.vocab_size, (2, 7))
    ids[:, column] = IMAGE_TOKEN_ID
    visual = torch.randn(2, 5, model.config.llm.d_model)
    general = splice_visual_tokens(model.llm.embed, ids, visual).inputs_embeds
    assert image_column(ids) == column
    assert torch.equal(splice_at_column(model.llm.embed(ids.clamp(min=0)), visual, column), general)
