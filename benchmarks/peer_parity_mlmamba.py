"""On a GPU: ML-Mamba built with its own code against the same weights converted by ``qmamba convert mlmamba``.

The ML-Mamba half of ``peer_parity.py`` (whose helpers it shares: towers, tokenizer, pairs, comparisons, timing).
ML-Mamba's public code (``--mlmamba-src``, pinned commit) builds its VLM on its fork of mamba_ssm (``--mlmamba-site``:
the fork with its CUDA extension and ML-Mamba's causal-conv1d, built by ``benchmarks/build_peer_mamba.sh``), hub
downloads replaced by local random weights: timm tower files, mamba2-2.7b's config given to the fork's
``load_config_hf`` (``MambaLMHeadModel`` and ``Bidirectional_Mamba.from_pretrained`` read it), qmamba's micro
tokenizer. Its checkpoint is written as its training writes it (``checkpoints/latest-checkpoint.pt`` with the
``llm_backbone``, ``mlp``, ``bidirectional_mamba`` and ``projector`` module dicts, next to ``config.json``), converted
by ``qmamba.convert.convert_mlmamba``, and both models see the same images and prompts:

    logits       last-layer logits at every position, fp32 (no autocast) and bf16 (ML-Mamba's weights in bf16,
                 its autocast on; qmamba bf16: ``peer_parity.set_precision``)
    greedy       answers of ML-Mamba's ``generate`` (use_cache, its CUDA-graph decode) and ``qmamba.generate``
    time         one answer in each implementation, in the same run (median of ``--repeats``)

Prepare on a machine with network (``.whl/`` is git-ignored):

    git -C MIRROR/ML-Mamba archive 5fdff98 | tar -x -C .whl/mlmamba-src --exclude=assets --exclude=pic \\
        --exclude=demo.ipynb
    git -C MIRROR/mamba archive 8c1311f | tar -x -C .whl/mlmamba-mamba-src --exclude=assets
    pip download --no-deps timm==1.0.9 transformers==5.18.0 tokenizers==0.23.3 ... -d .whl/mlm-wheels

then on the GPU: install .whl/mlm-wheels/*.whl (not causal_conv1d) to /tmp/mlm-site, ``bash
benchmarks/build_peer_mamba.sh /tmp/mlm-site``, and ``python3 benchmarks/peer_parity_mlmamba.py --mlmamba-src
.whl/mlmamba-src --mlmamba-site /tmp/mlm-site --out $OUT``. Writes ``peer_parity_mlmamba.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch


def _cobra_half():
    """benchmarks/peer_parity.py as a module, by file (the benchmarks folder is not put on the path: its file
    names, kernels.py among them, would shadow installed packages)."""
    spec = importlib.util.spec_from_file_location("peer_parity", Path(__file__).resolve().parent / "peer_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _cobra_half()  # the same towers, tokenizer, pairs, comparisons and timing as the Cobra half

BUILD = "bash benchmarks/build_peer_mamba.sh /tmp/mlm-site"
# state-spaces/mamba2-2.7b's config.json (its LM; Bidirectional_Mamba takes d_model, ssm_cfg and the norm flags)
MAMBA2_CONFIGS = {"state-spaces/mamba2-2.7b": {
    "d_model": 2560, "d_intermediate": 0, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
    "pad_vocab_size_multiple": 16, "tie_embeddings": True}}
RUN_CONFIG = {"model_id": "mlmamba+3b", "vision_backbone_id": "dinosiglip-vit-so-384px",
              "image_resize_strategy": "resize-naive", "llm_backbone_id": "mamba2-2.7b",
              "arch_specifier": "no-align+fused-gelu-mlp"}  # ML-Mamba's MLMamba_3B (mlmamba/conf/models.py)


# ------------------------------------------------------------------------------------------- the two folders
def missing_parts(src: Path | None, site: Path | None, stub_scan: bool = False) -> list[str]:
    """What ``--mlmamba-src`` / ``--mlmamba-site`` lack, each line naming the folder and how to make it."""
    problems = []
    if src is None or not (src / "mlmamba" / "models" / "vlms" / "mlmamba.py").is_file():
        problems.append(f"--mlmamba-src {src}: no mlmamba/models/vlms/mlmamba.py; unpack WenjunHuang94/ML-Mamba at "
                        f"5fdff98 there (git archive 5fdff98 | tar -x -C .whl/mlmamba-src)")
    if site is None or not (site / "mamba_ssm" / "models" / "mixer_seq_simple.py").is_file():
        problems.append(f"--mlmamba-site {site}: no mamba_ssm (ML-Mamba's fork); build it with `{BUILD}`")
        return problems
    if "Bidirectional_Mamba" not in (site / "mamba_ssm" / "models" / "mixer_seq_simple.py").read_text():
        problems.append(f"--mlmamba-site {site}: its mamba_ssm has no Bidirectional_Mamba (upstream mamba_ssm, not "
                        f"ML-Mamba's fork WenjunHuang94/mamba); rebuild with `{BUILD}`")
    if not stub_scan and not list(site.glob("selective_scan_cuda*.so")):
        problems.append(f"--mlmamba-site {site}: no selective_scan_cuda extension; build it with `{BUILD}` "
                        f"(or pass --stub-selective-scan: ML-Mamba's Mamba-2 path never calls it)")
    if not list(site.glob("causal_conv1d_cuda*.so")):
        problems.append(f"--mlmamba-site {site}: no causal_conv1d_cuda extension; build it with `{BUILD}`")
    return problems


def require_timm_1() -> None:
    """ML-Mamba's DinoSigLIP backbone indexes ``[0]`` of what its patched featurizers return: the list of timm >= 1.0's
    ``get_intermediate_layers``. timm 0.9 returns a tuple, which the peer's ``unpack_tuple`` unwraps first, and the
    index then drops the batch dimension."""
    import timm

    if int(timm.__version__.split(".")[0]) < 1:
        sys.exit(f"timm {timm.__version__} (from {Path(timm.__file__).parent}): ML-Mamba's vision backbone needs "
                 f"timm >= 1.0 (its featurizers return lists there); install .whl/mlm-wheels/timm-1.0.9 into "
                 f"--mlmamba-site")


def stub_selective_scan() -> None:
    """mamba_ssm/__init__ imports the Mamba-1 scan extension; ML-Mamba (Mamba-2 only) never calls it."""
    def missing(name):
        raise RuntimeError(f"selective_scan_cuda.{name}: stubbed (--stub-selective-scan); Mamba-1 is not used here")
    stub = types.ModuleType("selective_scan_cuda")
    stub.__getattr__ = missing
    sys.modules["selective_scan_cuda"] = stub


class _CausalConv1dV12:
    """causal-conv1d >= 1.5's extension under the 1.2 call the fork makes: ``causal_conv1d_fwd(x, w, b, seq_idx,
    initial_states, final_states_out, silu) -> out`` (the newer one takes ``out`` as an argument). Same kernel."""

    def __init__(self, ext):
        self._ext = ext

    def causal_conv1d_fwd(self, x, weight, bias, seq_idx, initial_states, final_states_out, silu):
        out = torch.empty_like(x)
        self._ext.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu)
        return out

    def __getattr__(self, name):
        return getattr(self._ext, name)


def shim_triton_log1p() -> None:
    """``tl.math.log1p`` for the fork's Triton kernels (its dt softplus in ``ssd_chunk_state`` and
    ``selective_state_update``): Triton 3 dropped the name; libdevice's ``log1p`` is the same CUDA function."""
    import triton.language as tl

    if not hasattr(tl.math, "log1p"):
        from triton.language.extra.cuda import libdevice

        tl.math.log1p = libdevice.log1p


def prepare_imports(src: Path, site: Path, stub_scan: bool) -> dict:
    """ML-Mamba and its fork first on the path; returns what was used (recorded in the JSON)."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("mamba_ssm", "causal_conv1d", "causal_conv1d_cuda")]:
        del sys.modules[name]  # another mamba_ssm (upstream, Cobra's) must not shadow the fork
    sys.path[:0] = [str(src), str(site)]
    if stub_scan:
        stub_selective_scan()
    common.shim_dependencies()  # before mamba_ssm's first import: its utils/generation.py imports the old names
    shim_triton_log1p()
    import causal_conv1d
    import causal_conv1d_cuda

    version = getattr(causal_conv1d, "__version__", "?")
    if not version.startswith("1.2"):
        import mamba_ssm.ops.triton.ssd_combined as ssd  # the only caller of the extension on ML-Mamba's path
        ssd.causal_conv1d_cuda = _CausalConv1dV12(causal_conv1d_cuda)
    pins = {p.parent.name: p.read_text().strip() for p in (src / "PEER_COMMIT", site / "PEER_COMMIT") if p.exists()}
    return {"causal_conv1d": version, "selective_scan_cuda": "stub" if stub_scan else "built", "pins": pins}


# ------------------------------------------------------------------------------------------- ML-Mamba's side
def build_mlmamba(tok, files: dict[str, Path], device: str):
    """ML-Mamba's own VLM (mlmamba+3b: dinosiglip 384, mamba2-2.7b, Bidirectional_Mamba, fused-gelu-mlp), random."""
    import mamba_ssm.models.mixer_seq_simple as mixer
    import mlmamba.models.backbones.llm.base_llm as base_llm
    import mlmamba.models.backbones.vision.dinosiglip_vit as dinosiglip
    import timm
    from mlmamba.models.backbones.llm import MambaLLMBackbone
    from mlmamba.models.vlms.mlmamba import MLMambaVLM

    def create_model(name, pretrained=False, **kw):  # timm's own loading, from the local file
        file = files["dino" if "dinov2" in name else "siglip"]
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kw)

    dinosiglip.timm = type("timm", (), {"create_model": staticmethod(create_model), "data": timm.data})
    mixer.load_config_hf = lambda name: json.loads(json.dumps(MAMBA2_CONFIGS[name]))  # both from_pretrained calls
    base_llm.AutoTokenizer = type("AutoTokenizer", (), {"from_pretrained": staticmethod(lambda *a, **k: tok)})
    torch.manual_seed(0)
    vision = dinosiglip.DinoSigLIPViTBackbone(RUN_CONFIG["vision_backbone_id"], RUN_CONFIG["image_resize_strategy"],
                                              default_image_size=384)
    llm = MambaLLMBackbone(RUN_CONFIG["llm_backbone_id"], inference_mode=True)  # built on cuda, fp32, by its code
    vlm = MLMambaVLM(RUN_CONFIG["model_id"], vision, llm, llm_backbone_id=RUN_CONFIG["llm_backbone_id"],
                     arch_specifier=RUN_CONFIG["arch_specifier"])
    perturb(vlm)
    return vlm.to(device).eval()


def perturb(vlm) -> None:
    """Noise on the trained modules so no norm, bias or skip stays at its constant init (a misplaced tensor shows)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in (vlm.mlp, vlm.bidirectional_mamba, vlm.projector):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)


def checkpoint_modules(vlm) -> dict[str, dict[str, torch.Tensor]]:
    """The module dicts ML-Mamba's ``from_pretrained`` loads: ``llm_backbone`` into ``llm_backbone.llm``, the
    others into the attributes of the same name."""
    modules = {"llm_backbone": vlm.llm_backbone.llm, "mlp": vlm.mlp, "bidirectional_mamba": vlm.bidirectional_mamba,
               "projector": vlm.projector}
    return {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in modules.items()}


def write_run(vlm, work: Path, config: dict | None = None) -> Path:
    """ML-Mamba's run directory: config.json (the keys its ``load`` reads) and checkpoints/latest-checkpoint.pt
    ({"model": module dicts})."""
    config = config or RUN_CONFIG
    run = work / config["model_id"]
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"model": config}))
    torch.save({"model": checkpoint_modules(vlm)}, run / "checkpoints" / "latest-checkpoint.pt")
    return run


# ------------------------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mlmamba-src", type=Path, default=None, help="ML-Mamba's source tree (holds mlmamba/)")
    p.add_argument("--mlmamba-site", type=Path, default=None,
                   help=f"ML-Mamba's mamba_ssm fork + causal-conv1d, built (`{BUILD}`)")
    p.add_argument("--stub-selective-scan", action="store_true",
                   help="run without the fork's selective_scan_cuda (Mamba-1 only; ML-Mamba never calls it)")
    p.add_argument("--work", default="/tmp/peer_parity_mlmamba", help="where the peer-format files are written")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default="bf16,fp32", help="precision modes to compare (bf16 also times answers)")
    p.add_argument("--out", default=None, help="directory for peer_parity_mlmamba.json")
    args = p.parse_args(argv)
    problems = missing_parts(args.mlmamba_src, args.mlmamba_site, args.stub_selective_scan)
    if problems:
        p.error("\n  ".join(["ML-Mamba's code is not ready:", *problems]))
    return args


def main(argv=None) -> int:
    args = parse(argv)
    common.require_transformers()
    used = prepare_imports(args.mlmamba_src.resolve(), args.mlmamba_site.resolve(), args.stub_selective_scan)
    require_timm_1()
    from qmamba.convert import convert_mlmamba

    device, work = "cuda", Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tok = common.tokenizer_for_cobra(work)  # ML-Mamba's VLM asserts the same single-token answer words
    files = common.timm_towers(work)
    vlm = build_mlmamba(tok, files, device)
    run = write_run(vlm, work)
    data = common.pairs(args.pairs)
    rows, timing = common.compare_modes(vlm, convert_mlmamba, run, files, tok, work, data, args, device, "mlmamba")
    result = {"peer": "mlmamba", "device": torch.cuda.get_device_name(), "rows": rows, "timing": timing, **used}
    common.finish(result, args.out, "peer_parity_mlmamba.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
