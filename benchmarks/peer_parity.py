"""On a GPU: Cobra built with its own code against the same weights converted by ``qmamba convert cobra``.

Cobra's public code (pinned commit, importable as ``cobra``) builds its VLM with hub downloads replaced by local,
random-initialised weights saved in its own formats: timm tower files (loaded by timm itself, which resamples
DINOv2's position table to 384), a run directory with config.json and checkpoints/latest-checkpoint.pt. Those
files go through ``qmamba.convert.convert_cobra``; both models then see the same images and prompts:

    prompt ids   Cobra's prompt builder + tokenizer  vs  qmamba's Processor (image first, zephyr template)
    logits       last-layer logits at every position, fp32 (no autocast) and bf16 (Cobra's weights in bf16 as its
                 README loads them for inference, its autocast on; qmamba bf16)
    greedy       answers of Cobra's ``generate`` and ``qmamba.generate`` over ``--pairs`` image/question pairs
    time         one answer in each implementation, in the same run (median of ``--repeats``)

Needs: mamba_ssm (+ causal_conv1d), timm (Cobra pins 0.9.10), torchvision, the Cobra source on the path.
The tokenizer is qmamba's micro tokenizer (no network), with Cobra's single-token answer words added.
Prints a markdown table; writes JSON to ``--out``. The exact GPU command is in the notes that ship this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "src" / "qmamba" / "assets" / "micro" / "mamba"
QUESTIONS = ["What is in the image?", "Describe the image.", "What colour dominates?", "Is there a circle?",
             "How many objects are there?", "What is on the left?", "Is it day or night?", "What shape is this?",
             "Where is the red square?", "Answer yes or no: is it blue?"]


# ------------------------------------------------------------------------------------------- compatibility
def require_transformers() -> None:
    """qmamba's vision loader maps towers onto the module names of transformers >= 5.18 (its pyproject pin);
    an older one here would fail the conversion with a list of unmatched keys instead of this line."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version("5.18"):
        sys.exit(f"transformers {transformers.__version__} is older than qmamba's minimum 5.18: put a newer one "
                 f"first on PYTHONPATH (e.g. pip install --no-deps --target /tmp/tf transformers==5.18.0)")


def shim_dependencies() -> None:
    """Names Cobra's code imports that newer transformers / mamba_ssm moved; aliases only, no behaviour."""
    import importlib

    import transformers
    import transformers.generation as gen

    # Cobra registers its own "mamba" config and model with the Auto classes; transformers now has its own
    for auto in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoModel):
        if not getattr(auto.register, "_peer_shim", False):
            original = auto.register

            def register(*args, _original=original, **kwargs):
                return _original(*args, **{**kwargs, "exist_ok": True})
            register._peer_shim = True
            auto.register = register

    for old in ("GreedySearchDecoderOnlyOutput", "SampleDecoderOnlyOutput"):
        if not hasattr(gen, old):
            setattr(gen, old, gen.GenerateDecoderOnlyOutput)
    try:
        importlib.import_module("mamba_ssm.ops.triton.layernorm")
    except ImportError:  # mamba_ssm >= 2 renamed the module
        sys.modules["mamba_ssm.ops.triton.layernorm"] = importlib.import_module("mamba_ssm.ops.triton.layer_norm")


def tokenizer_for_cobra(work: Path):
    """qmamba's micro tokenizer, right-padded, with Cobra's answer words as single tokens (its VLM asserts it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    words = ["True", "False", "Yes", "No"] + [chr(ord("A") + i) for i in range(26)]
    tok.add_tokens([w for w in words if len(tok.encode(w, add_special_tokens=False)) != 1])
    tok.padding_side = "right"
    tok.save_pretrained(str(work / "tokenizer"))
    return tok


# ------------------------------------------------------------------------------------------- Cobra's side
def timm_towers(work: Path) -> dict[str, Path]:
    """Random DINOv2 reg4 ViT-L/14 and SigLIP so400m/14 in timm's format (perturbed so no layer is an identity)."""
    import timm
    from safetensors.torch import save_file

    files = {}
    for key, name in (("dino", "vit_large_patch14_reg4_dinov2"), ("siglip", "vit_so400m_patch14_siglip_384")):
        torch.manual_seed(len(files))
        model = timm.create_model(name, pretrained=False, num_classes=0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        (work / key).mkdir(parents=True, exist_ok=True)
        files[key] = work / key / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files[key]))
    return files


def build_cobra(work: Path, tok, files: dict[str, Path], device: str):
    """Cobra's own VLM (dinosiglip 384, mamba-2.8b-zephyr, fused-gelu-mlp) on the local random weights."""
    import cobra.models.backbones.llm.base_llm as base_llm
    import cobra.models.backbones.vision.dinosiglip_vit as dinosiglip
    import timm
    from cobra.models.backbones.llm import MambaLLMBackbone
    from cobra.models.mamba.configuration_mamba import MambaConfig
    from cobra.models.mamba.modeling_mamba import MambaForCausalLM
    from cobra.models.vlms.cobra import CobraVLM

    def create_model(name, pretrained=False, **kw):  # timm's own loading, from the local file
        file = files["dino" if "dinov2" in name else "siglip"]
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kw)

    dinosiglip.timm = type("timm", (), {"create_model": staticmethod(create_model), "data": timm.data})
    config = MambaConfig(d_model=2560, n_layer=64, vocab_size=50280)  # mamba-2.8b-zephyr's shape
    base_llm.AutoConfig = type("AutoConfig", (), {"from_pretrained": staticmethod(lambda *a, **k: config)})
    base_llm.AutoTokenizer = type("AutoTokenizer", (), {"from_pretrained": staticmethod(lambda *a, **k: tok)})
    MambaForCausalLM._from_config = classmethod(lambda cls, cfg, **kw: cls(cfg))
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: minutes faster for 2.8B parameters
        vision = dinosiglip.DinoSigLIPViTBackbone("dinosiglip-vit-so-384px", "resize-naive", default_image_size=384)
        llm = MambaLLMBackbone("mamba-2.8b-zephyr", inference_mode=True)
        vlm = CobraVLM("cobra+3b", vision, llm, arch_specifier="no-align+fused-gelu-mlp")
    return vlm.to(device).eval()


def write_run(vlm, work: Path) -> Path:
    """Cobra's run directory: config.json and the checkpoint its training writes (projector + llm_backbone)."""
    run = work / "cobra+3b"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"model": {
        "model_id": "cobra+3b", "vision_backbone_id": "dinosiglip-vit-so-384px",
        "image_resize_strategy": "resize-naive", "llm_backbone_id": "mamba-2.8b-zephyr",
        "arch_specifier": "no-align+fused-gelu-mlp"}}))
    state = {"projector": vlm.projector.state_dict(), "llm_backbone": vlm.llm_backbone.state_dict()}
    torch.save({"model": {m: {k: v.cpu() for k, v in s.items()} for m, s in state.items()}},
               run / "checkpoints" / "latest-checkpoint.pt")
    return run


# ------------------------------------------------------------------------------------------- the pairs
def pairs(n: int) -> list[tuple[Image.Image, str]]:
    """``n`` seeded images (coloured blocks on noise) with questions."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (320 + 8 * i, 448 - 4 * i, 3), dtype=np.uint8)
        y, x = rng.integers(0, 200, 2)
        img[y:y + 100, x:x + 120] = rng.integers(0, 256, 3, dtype=np.uint8)
        out.append((Image.fromarray(img), QUESTIONS[i % len(QUESTIONS)]))
    return out


def cobra_inputs(vlm, tok, image, question, device):
    builder = vlm.get_prompt_builder()
    builder.add_turn(role="human", message=question)
    prompt = builder.get_prompt()
    ids = tok(prompt, truncation=True, return_tensors="pt").input_ids.to(device)
    pixels = {k: v[None].to(device) for k, v in vlm.vision_backbone.image_transform(image).items()}
    return prompt, ids, pixels


def qmamba_inputs(processor, image, question, device, dtype):
    batch = processor([question], [image])
    return batch["input_ids"].to(device), batch["pixel_values"].to(device, dtype)


# ------------------------------------------------------------------------------------------- comparisons
def fp32_weights(vlm) -> dict:
    """A CPU copy of the peer's fp32 state, restored before each precision mode (``set_precision``)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in vlm.state_dict().items()}


def is_state_space_constant(name: str) -> bool:
    """A_log, D and dt_bias of a Mamba mixer (also the backward direction's, as ``A_b_log`` / ``D_b``)."""
    last = name.rsplit(".", 1)[-1]
    return (last.startswith("A") and last.endswith("log")) or last in ("D", "D_b", "dt_bias")


def set_precision(vlm, mode: str, master: dict) -> None:
    """The peer as its README runs it in ``mode``: bf16 weights (``vlm.to(device, dtype=torch.bfloat16)``) under its
    autocast, or fp32 weights without. With fp32 weights under autocast its decode cache, allocated in the weights'
    dtype, meets bf16 activations, which causal_conv1d >= 1.4 refuses. The fp32 values come back from ``master``;
    the state-space constants stay fp32 in bf16 mode, as in the converted qmamba model."""
    vlm.float()
    vlm.load_state_dict(master)
    if mode == "bf16":
        vlm.to(torch.bfloat16)
        for name, param in vlm.named_parameters():  # kept in fp32, as a model qmamba builds in bf16 keeps them
            if is_state_space_constant(name):
                param.data = master[name].to(param.device)
    vlm.enable_mixed_precision_training = mode == "bf16"  # the peer's autocast switch
    if getattr(vlm, "_decoding_cache", None) is not None:  # graphs captured in the other mode's dtype
        vlm._decoding_cache = None


@torch.inference_mode()
def compare(vlm, model, processor, tok, data, mode: str, device: str, max_new_tokens: int, master: dict) -> dict:
    """Logit differences at every position and greedy agreement over ``data`` in one precision mode."""
    set_precision(vlm, mode, master)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    worst, worst_rel, same_ids, same_answers, pixel_diff = 0.0, 0.0, 0, 0, 0.0
    for image, question in data:
        prompt, c_ids, c_px = cobra_inputs(vlm, tok, image, question, device)
        q_ids, q_px = qmamba_inputs(processor, image, question, device, dtype)
        same_ids += int(torch.equal(q_ids[0, 1:].cpu(), c_ids[0].cpu()))
        pixel_diff = max(pixel_diff, float((q_px.float() - torch.cat([c_px["dino"], c_px["siglip"]], 1)).abs().max()))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
            ref = vlm(input_ids=c_ids, attention_mask=torch.ones_like(c_ids), pixel_values=c_px).logits.float()
        got = model(q_ids, pixel_values=q_px).logits.float()  # (1, 729 + l, v)
        diff = float((got - ref).abs().max())
        worst, worst_rel = max(worst, diff), max(worst_rel, diff / float(ref.abs().max()))
        same_answers += int(cobra_answer(vlm, image, prompt, max_new_tokens) ==
                            qmamba_answer(model, processor, q_ids, q_px, max_new_tokens))
    n = len(data)
    return {"mode": mode, "max_abs_logit_diff": worst, "max_rel_logit_diff": worst_rel, "prompt_ids_equal": same_ids,
            "greedy_equal": same_answers, "pairs": n, "max_pixel_diff": pixel_diff}


def cobra_answer(vlm, image, prompt: str, max_new_tokens: int) -> str:
    # use_cache=True, as Cobra's own README calls it: its decode steps then run the LM alone from its cache (a
    # captured graph); without it every step passes the image again, which mamba_ssm 2.x refuses after the
    # prefill ("Only support decoding with 1 token at a time")
    return vlm.generate(image, prompt, use_cache=True, do_sample=False, max_new_tokens=max_new_tokens)


def qmamba_answer(model, processor, ids, pixels, max_new_tokens: int, stop_at_eos: bool = True) -> str:
    from qmamba import generate

    out = generate(model, ids, pixel_values=pixels, max_new_tokens=max_new_tokens,
                   eos_token_id=processor.eos_token_id if stop_at_eos else None)
    return processor.decode(out[0, ids.shape[1]:])


def time_answers(vlm, model, processor, tok, data, repeats: int, max_new_tokens: int, device: str,
                 peer: str = "cobra") -> dict:
    """Seconds for one answer (the first pair) in each implementation, bf16, median of ``repeats``; the peer's
    keys are named after ``peer`` (its VLM has Cobra's interface: prompt builder, image_transform, generate).
    Both decode exactly ``max_new_tokens`` tokens: end-of-text stops neither (random weights may pick it first,
    and an answer cut at another length would time different work)."""
    image, question = data[0]
    prompt, _, _ = cobra_inputs(vlm, tok, image, question, device)
    q_ids, q_px = qmamba_inputs(processor, image, question, device, torch.bfloat16)
    vlm.enable_mixed_precision_training = True
    runs = {peer: lambda: cobra_answer(vlm, image, prompt, max_new_tokens),
            "qmamba": lambda: qmamba_answer(model, processor, q_ids, q_px, max_new_tokens, stop_at_eos=False)}
    eos, vlm.eos_token_id = vlm.eos_token_id, None  # the peer's decode loop stops only at a set end-of-text id
    try:
        out = {}
        for name, fn in runs.items():
            fn()  # warm-up: kernels compiled, CUDA graphs captured
            times = []
            for _ in range(repeats):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            out[f"{name}_answer_s"] = statistics.median(times)
    finally:
        vlm.eos_token_id = eos
    return {**out, "decode_steps": max_new_tokens}


# ------------------------------------------------------------------------------------------- main
def compare_modes(vlm, convert, run: Path, files: dict, tok, work: Path, data, args, device: str,
                  peer: str) -> tuple[list[dict], dict | None]:
    """For each of ``args.modes``: the peer's ``run`` converted by ``convert`` (``convert_cobra`` or
    ``convert_mlmamba``) in that precision, compared with the peer (a table row printed), and in bf16 one answer
    timed in each; returns (rows, timing)."""
    from qmamba.data.processor import Processor

    master = fp32_weights(vlm)
    rows, timing, saved = [], None, work / "qmamba"
    for mode in args.modes.split(","):
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[mode]
        out = None if saved.exists() else saved  # the directory is written once: the processor reads it
        model = convert(run, files["dino"], files["siglip"], work / "tokenizer", out, dtype=dtype).to(device)
        processor = Processor.from_pretrained(saved)
        r = compare(vlm, model, processor, tok, data, mode, device, args.max_new_tokens, master)
        rows.append(r)
        print(f"| {mode} | {r['max_abs_logit_diff']:.3e} | {r['max_rel_logit_diff']:.3e} | "
              f"{r['greedy_equal']}/{r['pairs']} | {r['prompt_ids_equal']}/{r['pairs']} |", flush=True)
        if mode == "bf16":
            timing = time_answers(vlm, model, processor, tok, data, args.repeats, args.max_new_tokens, device, peer)
            print(json.dumps(timing), flush=True)
        del model
        torch.cuda.empty_cache()
    return rows, timing


def finish(result: dict, out: str | None, name: str) -> None:
    """Write ``result`` as ``<out>/<name>`` (when ``out``) and print it."""
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / name).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cobra-src", default=None, help="Cobra's source tree (else `cobra` must be importable)")
    p.add_argument("--work", default="/tmp/peer_parity", help="where the peer-format files are written")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default="bf16,fp32", help="precision modes to compare (bf16 also times answers)")
    p.add_argument("--out", default=None, help="directory for peer_parity.json")
    args = p.parse_args()
    if args.cobra_src:
        sys.path.insert(0, args.cobra_src)
    require_transformers()
    shim_dependencies()
    from qmamba.convert import convert_cobra

    device, work = "cuda", Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_for_cobra(work)
    files = timm_towers(work)
    vlm = build_cobra(work, tok, files, device)
    run = write_run(vlm, work)
    data = pairs(args.pairs)
    rows, timing = compare_modes(vlm, convert_cobra, run, files, tok, work, data, args, device, "cobra")
    finish({"device": torch.cuda.get_device_name(), "rows": rows, "timing": timing}, args.out, "peer_parity.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
