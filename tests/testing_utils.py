"""Shared test helpers: relative error and closeness checks, fixture paths."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str = "") -> None:
    """Relative-error check that reports max and mean absolute differences when it fails."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    err = rel_err(a, b)
    diff = (a.double() - b.double()).abs()
    assert err <= tol, f"{what}: rel err {err:.3g} > {tol:.1g} (max abs {diff.max():.3g}, mean abs {diff.mean():.3g})"


WORDS = ["what", "is", "the", "colour", "shape", "of", "circle", "square", "red", "blue", "green", "a", "an", "image", "in", "there", "yes", "no", "left", "right", "above", "below", "how", "many", "one", "two", "three", "describe", "this", "object"]
SPECIAL = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<unk>"]


def tiny_tokenizer(extra_words: tuple[str, ...] = ()):
    """A word-level transformers tokenizer over a few words (no network), with zephyr's markers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + list(WORDS) + list(extra_words) + ["?", ".", ","])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", additional_special_tokens=["<|user|>", "<|assistant|>"])


def poison_empty(monkeypatch) -> None:
    """Make torch.empty / empty_like return NaN-filled tensors, so an output a kernel forgets to write fails."""
    empty, empty_like = torch.empty, torch.empty_like

    def _nan(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _nan(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _nan(empty_like(*a, **k)))


def assert_grads_match(out, ref, inputs: dict, ref_inputs: dict, tol: float) -> None:
    """Backpropagate the same random output gradients through ``out`` (kernel) and ``ref`` (fp64 reference);
    every input's gradient keeps its input's dtype and matches the reference's."""
    grads_out = [torch.randn_like(r) for r in ref]
    got = torch.autograd.grad([o.double() for o in out], list(inputs.values()), grads_out)
    want = torch.autograd.grad(list(ref), list(ref_inputs.values()), grads_out)
    for name, g, r in zip(inputs, got, want):
        assert g.dtype == inputs[name].dtype, f"grad {name}: dtype {g.dtype} vs input {inputs[name].dtype}"
        assert_close(g, r, tol, f"grad {name}")


MAMBA1 = {"layer": "Mamba1", "d_state": 8}
MAMBA2 = {"layer": "Mamba2", "d_state": 16, "headdim": 8, "chunk_size": 8}


def tiny_lm(ssm_cfg: dict, device=None, dtype=None, **config):
    """A 2-layer, 32-wide MambaLM (``config`` overrides MambaLMConfig fields) whose weights are moved away from
    the init so that every parameter matters."""
    from qmamba.models.mamba_lm import MambaLM, MambaLMConfig

    cfg = {"d_model": 32, "n_layer": 2, "vocab_size": 97, "ssm_cfg": dict(ssm_cfg), **config}
    model = MambaLM(MambaLMConfig(**cfg), device=device, dtype=dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def measure_briefly(monkeypatch) -> None:
    """The decode ops choose their tiles as on any GPU (each candidate compiled, checked against the reference,
    timed in a CUDA graph, cached and reported), but among their first two candidates and on two weight copies:
    the full sweep times every tile over 300 MB of weight copies, which at tiny shapes is tens of thousands of
    launches per candidate. Patched wherever the measuring modules bound the two functions. Every ``gpu`` test
    runs so (``conftest.py``); the bench's figures and ``qmamba`` itself keep the full sweep."""
    import itertools
    import sys

    from qmamba.ops import available
    from qmamba.ops.runtime.measured_choice import fastest
    from qmamba.ops.runtime.timing import weight_copies

    available("gemv")  # imports the Triton kernel modules, which bind the two functions
    quick = {weight_copies: lambda like, past_bytes=0: weight_copies(like, past_bytes=0),
             fastest: lambda candidates, *args, **kwargs: fastest(itertools.islice(candidates, 2), *args, **kwargs)}
    for name, module in list(sys.modules.items()):
        for attr, value in list(vars(module).items()) if name.startswith("qmamba.") else ():
            for original, brief in quick.items():
                if value is original:
                    monkeypatch.setattr(module, attr, brief)


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` loaded as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tiny_multimodal(seed: int, preset: str = "tiny-qmamba-128"):
    """A tiny multimodal model (eval mode) whose weights are moved away from the init, so every one matters."""
    from qmamba.models.multimodal import MultimodalModel
    from qmamba.models.presets import get_preset

    torch.manual_seed(seed)
    model = MultimodalModel(get_preset(preset)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def wordy_qmamba_dir(folder: Path) -> Path:
    """A tiny Q-Mamba saved with its tokenizer under ``folder/model``, and two images beside it (red.png,
    white.png). Its answers are words that depend on the image and never end early: weights moved well away from
    the init, the untied LM head 0 on every special token (chat markers, end-of-text) and past the tiny vocabulary."""
    from PIL import Image

    from qmamba.models.multimodal import MultimodalModel
    from qmamba.models.presets import get_preset

    torch.manual_seed(0)
    cfg, tok = get_preset("tiny-qmamba-128"), tiny_tokenizer()
    cfg.llm.tie_embeddings = False
    model = MultimodalModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        model.llm.lm_head.weight[:len(SPECIAL)] = 0
        model.llm.lm_head.weight[len(tok):] = 0
    path = folder / "model"
    model.save_pretrained(path, tokenizer=tok, dtype=torch.float32)
    for name, colour in [("red", (255, 0, 0)), ("white", (255, 255, 255))]:
        Image.new("RGB", (40, 30), colour).save(folder / f"{name}.png")
    return path
