"""The gates of a sized micro build, measured on its staged backbones: the LM given each scene in words, and a
linear probe of the frozen encoder.

* ``lm_grounded``: held-out grounded conversations whose first reply the LM reproduces, the image given in
  words, over the open questions: caption requests aside, whose reply is a brief or a full caption at random
  (the words cannot say which; ``benchmarks/micro_oracle.py`` answers every other type from the words alone);
* ``lm_mmbench_circular``: the world's MMBench-like questions with the scene in words, under CircularEval
  (``grounding.score_mmbench``); POPE-like accuracy per split is recorded beside it;
* ``probe_shape`` / ``probe_color`` / ``probe_position``: ``probe.probe_encoder`` fitted on the align scenes,
  scored on the VQAv2-like evaluation scenes; for each held-out style, the same probe scored on that style's
  copies of those scenes is recorded (not gated) beside it.

Recorded beside the figures, so that a failed build says what limits it: the grounded accuracy per question type
(``grounded_by_type``; ``benchmarks/micro_oracle.py`` gives the ceiling of each type on the words) and the
MMBench-like letters picked and right (``mmbench["letters"]``, ``mmbench["answer_letters"]``).

A gate passes when its figure is >= its target (``MicroSize.gates``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from qmamba.data.tokenizer import load_tokenizer
from qmamba.micro.grounding import SPLITS, score_mmbench, score_split
from qmamba.micro.probe import ProbeConfig, probe_encoder
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.vision import VisionEncoder


def measure_gates(stage: Path, manifest, size, lm_record: dict, device: torch.device) -> dict:
    """{"figures", "targets", "passed", "all_passed", "mmbench", "pope", "probe", "probe_heldout_style",
    "grounded_by_type"}."""
    lm = lm_gates(stage / "mamba", manifest, lm_record, device)
    encoder = VisionEncoder.from_pretrained(stage / "siglip").to(device)
    cfg = ProbeConfig(steps=size.probe["steps"])
    n_train, n_test = size.probe["n_train"], size.probe["n_test"]
    probe = probe_encoder(encoder, manifest, n_train=n_train, n_test=n_test, cfg=cfg)
    heldout = {style: probe_encoder(encoder, manifest.styled(style), n_train=n_train, n_test=n_test, cfg=cfg)
               for style in manifest.heldout_styles}
    figures = {**lm["figures"], "probe_shape": probe["shape"], "probe_color": probe["color"],
               "probe_position": probe["position"]}
    passed = {k: figures[k] is not None and figures[k] >= t for k, t in size.gates.items()}
    return {"figures": figures, "targets": dict(size.gates), "passed": passed, "all_passed": all(passed.values()),
            "mmbench": lm["mmbench"], "pope": lm["pope"], "probe": probe, "probe_heldout_style": heldout,
            "grounded_by_type": lm["grounded_by_type"]}


def lm_gates(lm_dir: Path, manifest, lm_record: dict, device: torch.device) -> dict:
    """The LM's part: {"figures": {"lm_grounded", "lm_mmbench_circular"}, "mmbench", "pope", "grounded_by_type"}
    of the LM saved in ``lm_dir`` (``lm_record``: what ``pretrain_lm`` returned for it)."""
    lm = MambaLM.from_pretrained(lm_dir).to(device).eval()
    tokenizer = load_tokenizer(lm_dir)
    mmbench = score_mmbench(lm, tokenizer, manifest.path("eval", "mmbench", "dir"))
    pope = {s: score_split(lm, tokenizer, manifest.path("eval", "pope", "dir"), s) for s in SPLITS}
    by_type = lm_record.get("answer_accuracy_grounded_by_type", {})
    figures = {"lm_grounded": open_question_accuracy(by_type, lm_record["answer_accuracy_grounded"]),
               "lm_mmbench_circular": mmbench["circular"]}
    return {"figures": figures, "mmbench": mmbench, "pope": pope, "grounded_by_type": by_type}


def open_question_accuracy(by_type: dict, overall: float | None) -> float | None:
    """The share of grounded first questions answered, caption requests aside (``overall`` without types)."""
    kept = {k: v for k, v in by_type.items() if k != "caption"}
    questions = sum(v["questions"] for v in kept.values())
    if not questions:
        return overall
    return sum(v["accuracy"] * v["questions"] for v in kept.values()) / questions


def gate_lines(gates: dict) -> list[str]:
    """One printable line per gate: figure, target, PASS/FAIL; then the held-out style's probe."""
    lines = [f"gate {name:22s} {100 * (gates['figures'][name] or 0):6.1f}%  target >= {100 * target:.0f}%  "
             f"{'PASS' if gates['passed'][name] else 'FAIL'}" for name, target in gates["targets"].items()]
    by_type = gates.get("grounded_by_type") or {}
    if by_type:
        worst = sorted(by_type.items(), key=lambda kv: kv[1]["accuracy"])[:6]
        lines.append("lm_grounded by question type, weakest first: " + ", ".join(
            f"{name} {100 * s['accuracy']:.0f}% of {s['questions']}" for name, s in worst))
    if "letters" in gates.get("mmbench", {}):
        m = gates["mmbench"]
        lines.append("lm_mmbench letters picked " + " ".join(f"{c}:{n}" for c, n in m["letters"].items())
                     + ", right letters " + " ".join(f"{c}:{n}" for c, n in m["answer_letters"].items()))
    for style, p in gates.get("probe_heldout_style", {}).items():
        lines.append(f"probe in held-out style {style!r}: shape {100 * p['shape']:.1f}%, colour "
                     f"{100 * p['color']:.1f}%, position {100 * p['position']:.1f}% (not gated)")
    return lines
