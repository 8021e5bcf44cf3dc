"""On a GPU: qmamba (Triton kernels and CUDA-graph decoding unless QMAMBA_BACKEND=ref) against the ground
truth kept in tests/fixtures (logits saved by mamba_ssm's CUDA kernels) in fp32 and bf16, and, when mamba_ssm is
installed, against mamba_ssm itself on the same random weights at a mamba-130m-like shape. Prints a table; writes
JSON with --json. Each row is printed (flushed) as soon as it is measured, so a run cut short keeps its rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from qmamba import MambaLM, generate

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


class PrintedRows(list):
    """A list of table rows that prints each row (flushed) as it is appended."""

    def append(self, row: dict) -> None:
        super().append(row)
        print_row(row)


def print_row(r: dict) -> None:
    print(f"| {r['check']} | {r['dtype']} | {r['rel_err']:.2e} | {r['greedy_equal']} |", flush=True)


def fixtures(device: str) -> list[dict]:
    rows = PrintedRows()
    for name in ("mamba1-tiny", "mamba2-tiny"):
        ref = load_file(FIXTURES / name / "reference_outputs.safetensors")
        for dtype in (torch.float32, torch.bfloat16):
            model = MambaLM.from_pretrained(FIXTURES / name, dtype=dtype, device=device)
            with torch.no_grad():
                logits = model(ref["input_ids"].to(device)).logits.float().cpu()
            greedy = generate(model, ref["input_ids"][:, :10].to(device), max_new_tokens=16).cpu()
            rows.append({"check": f"{name} vs mamba_ssm fixture", "dtype": str(dtype).split(".")[-1],
                         "rel_err": rel(logits, ref["logits"]),
                         "greedy_equal": bool(torch.equal(greedy, ref["greedy_sequences"]))})
    return rows


def against_mamba_ssm(device: str, layer: str) -> dict | None:
    try:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError:
        return None
    torch.manual_seed(0)
    ssm_cfg = {"layer": layer} if layer == "Mamba2" else {}
    ref = MambaLMHeadModel(MambaConfig(d_model=768, n_layer=4, vocab_size=50277, ssm_cfg=ssm_cfg), device=device)
    ref.eval()
    path = Path("/tmp/qmamba_parity_ckpt")
    ref.save_pretrained(str(path))
    ours = MambaLM.from_pretrained(path, device=device)
    ids = torch.randint(0, 50277, (2, 301), device=device)  # odd lengths: Mamba-1 runs them right-padded
    with torch.no_grad():
        a, b = ours(ids).logits, ref(ids).logits
    return {"check": f"{layer} 768x4 vs mamba_ssm (same weights)", "dtype": "float32", "rel_err": rel(a, b),
            "greedy_equal": bool(torch.equal(generate(ours, ids[:, :21], max_new_tokens=12),
                                             ref.generate(ids[:, :21], max_length=33, top_k=1)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    print(f"\n| check ({torch.cuda.get_device_name()}) | dtype | rel. error of logits | greedy tokens equal |")
    print("| --- | --- | ---: | --- |", flush=True)
    rows = list(fixtures("cuda"))
    for layer in ("Mamba1", "Mamba2"):
        row = against_mamba_ssm("cuda", layer)
        if row is not None:
            rows.append(row)
            print_row(row)
    if a.json:
        Path(a.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
