"""benchmarks/peer_parity_mlmamba.py up to ML-Mamba's own code (which needs its CUDA fork): the folder checks, the
checkpoint it writes in ML-Mamba's layout (converted back to the same logits), the causal-conv1d call adapter."""

from __future__ import annotations

import types

import pytest
import torch
from peer_files import SIZE, inputs, reference_model, write_towers
from testing_utils import benchmark_script

from qmamba.convert import convert_mlmamba


@pytest.fixture(scope="module")
def script():
    return benchmark_script("peer_parity_mlmamba")


def _ready(tmp_path, bidirectional=True, scan=True, conv=True):
    src, site = tmp_path / "mlmamba-src", tmp_path / "site"
    (src / "mlmamba/models/vlms").mkdir(parents=True)
    (src / "mlmamba/models/vlms/mlmamba.py").write_text("class MLMambaVLM: ...\n")
    (site / "mamba_ssm/models").mkdir(parents=True)
    (site / "mamba_ssm/models/mixer_seq_simple.py").write_text(
        "class Bidirectional_Mamba: ...\n" if bidirectional else "class MambaLMHeadModel: ...\n")
    for name, present in (("selective_scan_cuda", scan), ("causal_conv1d_cuda", conv)):
        if present:
            (site / f"{name}.cpython-312-x86_64-linux-gnu.so").write_bytes(b"")
    return src, site


def test_missing_folders_are_named_with_the_command_that_makes_them(script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.parse(["--mlmamba-src", str(tmp_path / "nowhere"), "--mlmamba-site", str(tmp_path / "site")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--mlmamba-src {tmp_path / 'nowhere'}" in err and "5fdff98" in err
    assert f"--mlmamba-site {tmp_path / 'site'}" in err and "bash benchmarks/build_peer_mamba.sh" in err


def test_site_checks(script, tmp_path):
    src, site = _ready(tmp_path)
    assert script.missing_parts(src, site) == []
    assert script.missing_parts(None, site)[0].startswith("--mlmamba-src None")
    src, site = _ready(tmp_path / "upstream", bidirectional=False)
    assert "no Bidirectional_Mamba" in script.missing_parts(src, site)[0]
    src, site = _ready(tmp_path / "noscan", scan=False)
    assert "--stub-selective-scan" in script.missing_parts(src, site)[0]
    assert script.missing_parts(src, site, stub_scan=True) == []
    src, site = _ready(tmp_path / "noconv", conv=False)
    assert "causal_conv1d_cuda" in script.missing_parts(src, site)[0]


def test_checkpoint_in_mlmamba_layout_converts_to_the_same_logits(script, tmp_path):
    """The module dicts taken from ML-Mamba's attribute names (``llm_backbone.llm``, ``mlp``,
    ``bidirectional_mamba``, ``projector``), written as its training writes them, convert back exactly."""
    ref = reference_model("tiny-mlmamba")
    vlm = types.SimpleNamespace(mlp=ref.connector.mlp, bidirectional_mamba=ref.connector.bidirectional_mamba,
                                projector=ref.connector.projector, llm_backbone=types.SimpleNamespace(llm=ref.llm))
    modules = script.checkpoint_modules(vlm)
    assert sorted(modules) == ["bidirectional_mamba", "llm_backbone", "mlp", "projector"]
    assert "lm_head.weight" in modules["llm_backbone"] and "0.weight" in modules["mlp"]
    dino, siglip = write_towers(ref, tmp_path)
    config = {**script.RUN_CONFIG, "vision_backbone_id": f"dinosiglip-vit-so-{SIZE}px"}
    run = script.write_run(vlm, tmp_path, config)
    assert (run / "checkpoints" / "latest-checkpoint.pt").is_file()
    model = convert_mlmamba(run, dino, siglip, None, None, preset="tiny-mlmamba")
    ids, pixels = inputs(ref)
    with torch.no_grad():
        got, want = model(ids, pixel_values=pixels).logits, ref(ids, pixel_values=pixels).logits
    assert (got - want).abs().max() <= 1e-5


def test_causal_conv1d_adapter_makes_the_forks_call_on_the_newer_extension(script):
    calls = []

    class Ext:  # causal-conv1d >= 1.5: out is an argument, nothing returned
        def causal_conv1d_fwd(self, x, w, b, seq_idx, init, out, final, silu):
            calls.append((seq_idx, init, final, silu))
            out.copy_(x * 2)

        causal_conv1d_update = "update"

    x = torch.randn(2, 6, 5).transpose(1, 2)  # (b, d, s) channel-last view, as the fork passes it
    out = script._CausalConv1dV12(Ext()).causal_conv1d_fwd(x, None, None, None, None, None, True)
    assert torch.equal(out, x * 2) and out.stride() == x.stride() and calls == [(None, None, None, True)]
    assert script._CausalConv1dV12(Ext()).causal_conv1d_update == "update"


def test_mamba2_config_is_the_presets_llm(script):
    from qmamba.models.presets import LLM_PRESETS

    cfg, ours = script.MAMBA2_CONFIGS["state-spaces/mamba2-2.7b"], LLM_PRESETS["mamba2-2.7b"]()
    assert (cfg["d_model"], cfg["n_layer"], cfg["vocab_size"], cfg["pad_vocab_size_multiple"]) == \
        (ours.d_model, ours.n_layer, ours.vocab_size, ours.pad_vocab_size_multiple)
    assert cfg["ssm_cfg"] == ours.ssm_cfg


def test_the_peer_runs_bf16_with_fp32_state_space_constants_and_gets_its_fp32_weights_back():
    common = benchmark_script("peer_parity")

    class Mixer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.in_proj = torch.nn.Linear(4, 4)
            self.A_log, self.A_b_log = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(4))
            self.D, self.D_b, self.dt_bias = (torch.nn.Parameter(torch.randn(4)) for _ in range(3))

    torch.manual_seed(0)
    vlm = torch.nn.Sequential(Mixer())
    master = common.fp32_weights(vlm)
    common.set_precision(vlm, "bf16", master)
    dtypes = {name: p.dtype for name, p in vlm.named_parameters()}
    assert dtypes.pop("0.in_proj.weight") == dtypes.pop("0.in_proj.bias") == torch.bfloat16
    assert set(dtypes.values()) == {torch.float32} and len(dtypes) == 5
    assert torch.equal(vlm[0].A_log, master["0.A_log"]) and vlm.enable_mixed_precision_training
    common.set_precision(vlm, "fp32", master)  # the bf16 rounding is undone, not kept
    assert all(torch.equal(p, master[name]) for name, p in vlm.named_parameters())
    assert not vlm.enable_mixed_precision_training


def test_the_forks_triton_log1p_resolves_to_libdevice(script, monkeypatch):
    tl = pytest.importorskip("triton.language")
    libdevice = pytest.importorskip("triton.language.extra.cuda.libdevice")
    monkeypatch.delattr(tl.math, "log1p", raising=False)  # as in Triton 3, which the fork predates
    script.shim_triton_log1p()
    assert tl.math.log1p is libdevice.log1p
    kept = object()
    monkeypatch.setattr(tl.math, "log1p", kept, raising=False)
    script.shim_triton_log1p()  # a Triton that has the name keeps its own
    assert tl.math.log1p is kept
