"""Named configurations: the paper's systems at full size, and tiny twins for tests.

    qmamba-{128,256,512,729}  SigLIP so400m/384 + VL-Mamba BSM preprocessing + Q-Mamba (24 x 768, local
                              attention) + Mamba-2.8B (zephyr)                    [Q-Mamba paper, Table 1]
    qformer-256               the same with self-attention in place of the Mamba layers (ablation)
    cobra                     DINOv2 + SigLIP (384) + fused-gelu-mlp + Mamba-2.8B (zephyr), image first
    vlmamba-bsm, vlmamba-csm  SigLIP so400m/384 + VL-Mamba's MMC (VSS-L2, BSM or CSM) + Mamba-2.8B
    mlmamba                   DINOv2 + SigLIP (384) + Mamba-2 scan connector + Mamba-2 2.7B, image first
    tiny-<name>               the same layout at toy sizes (random weights, for tests)
    micro-<name>              the micro-world's models: every connector on qmamba's shipped micro SigLIP and
                              micro Mamba LM (qmamba-16/32/64 local, qmamba-32-global, qformer-32, cobra (MLP on
                              the one micro encoder), vlmamba-bsm/csm, mlmamba (its connector, Mamba-1 LM))

Building a preset gives random weights; load pretrained parts with ``MultimodalModel.from_components``.
"""

from __future__ import annotations

from collections.abc import Callable

from qmamba.errors import ConfigError
from qmamba.models.connectors import MLMambaConfig, MLPConfig, QFormerConfig, QMambaConfig, VLMambaConfig
from qmamba.models.mamba_lm import MambaLMConfig
from qmamba.models.multimodal import MultimodalConfig
from qmamba.models.vision import vision_preset

LLM_PRESETS: dict[str, Callable[[], MambaLMConfig]] = {
    # state-spaces/mamba-130m: the width and depth of Q-Mamba's query blocks
    "mamba-130m": lambda: MambaLMConfig(d_model=768, n_layer=24, vocab_size=50277),
    # state-spaces/mamba-2.8b, xiuyul/mamba-2.8b-zephyr (vocab 50277 padded to 50280)
    "mamba-2.8b": lambda: MambaLMConfig(d_model=2560, n_layer=64, vocab_size=50277),
    # state-spaces/mamba2-2.7b (vocab padded to a multiple of 16)
    "mamba2-2.7b": lambda: MambaLMConfig(d_model=2560, n_layer=64, vocab_size=50277, ssm_cfg={"layer": "Mamba2"},
                                         pad_vocab_size_multiple=16),
    "tiny-mamba": lambda: MambaLMConfig(d_model=64, n_layer=2, vocab_size=300, ssm_cfg={"d_state": 8}),
    # qmamba's micro LM (byte-level BPE of 680 tokens, pretrained on the micro-world's text)
    "micro-mamba": lambda: MambaLMConfig(d_model=192, n_layer=4, vocab_size=680, ssm_cfg={"d_state": 16}),
    "tiny-mamba2": lambda: MambaLMConfig(d_model=64, n_layer=2, vocab_size=300, pad_vocab_size_multiple=16,
                                         ssm_cfg={"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 16}),
}


def _qmamba(n: int, tiny: bool = False, cls=QMambaConfig, **kw):
    if tiny:
        return cls(n_queries=n, width=32, n_layer=2, n_heads=4, preprocess=VLMambaConfig(d_state=8), **kw)
    return cls(n_queries=n, width=768, n_layer=24, n_heads=12, attention="local", preprocess=VLMambaConfig(), **kw)


def _layout(vision: str, connector, llm: str, position: str, tiny: bool) -> Callable[[], MultimodalConfig]:
    def make() -> MultimodalConfig:
        v = vision.replace("siglip-so400m-patch14-384", "siglip-tiny").replace("dinosiglip-384", "dinosiglip-tiny")
        return MultimodalConfig(vision=vision_preset(v if tiny else vision), connector=connector(),
                                llm=LLM_PRESETS[("tiny-" + llm.split("-")[0]) if tiny else llm](),
                                image_position=position, chat_template="zephyr")
    return make


def _systems(tiny: bool) -> dict[str, Callable[[], MultimodalConfig]]:
    siglip, dinosiglip = "siglip-so400m-patch14-384", "dinosiglip-384"
    qs = (4, 8, 16, 32) if tiny else (128, 256, 512, 729)
    out = {f"qmamba-{full}": _layout(siglip, lambda n=n: _qmamba(n, tiny), "mamba-2.8b", "placeholder", tiny)
           for n, full in zip(qs, (128, 256, 512, 729))}
    out["qformer-256"] = _layout(siglip, lambda: _qmamba(qs[1], tiny, QFormerConfig), "mamba-2.8b", "placeholder",
                                 tiny)
    out["cobra"] = _layout(dinosiglip, lambda: MLPConfig(arch="fused-gelu-mlp"), "mamba-2.8b", "prefix", tiny)
    for scan in ("bsm", "csm"):
        out[f"vlmamba-{scan}"] = _layout(
            siglip, lambda s=scan: VLMambaConfig(variant="vss-l2", scan=s, d_state=8 if tiny else 16),
            "mamba-2.8b", "placeholder", tiny)
    mlm = MLMambaConfig(d_state=16, headdim=16, chunk_size=16) if tiny else MLMambaConfig()
    out["mlmamba"] = _layout(dinosiglip, lambda: mlm, "mamba2-2.7b", "prefix", tiny)
    return out


def _micro(connector, position: str = "placeholder") -> Callable[[], MultimodalConfig]:
    return lambda: MultimodalConfig(vision=vision_preset("siglip-micro"), connector=connector(),
                                    llm=LLM_PRESETS["micro-mamba"](), image_position=position, chat_template="zephyr")


def _micro_query(n: int, cls=QMambaConfig, **kw):
    return lambda: cls(n_queries=n, width=96, n_layer=2, n_heads=4, preprocess=VLMambaConfig(d_state=8), **kw)


MICRO: dict[str, Callable[[], MultimodalConfig]] = {
    **{f"qmamba-{n}": _micro(_micro_query(n)) for n in (16, 32, 64)},
    "qmamba-32-global": _micro(_micro_query(32, attention="global")),
    "qformer-32": _micro(_micro_query(32, QFormerConfig)),
    "cobra": _micro(lambda: MLPConfig(arch="fused-gelu-mlp"), "prefix"),
    "vlmamba-bsm": _micro(lambda: VLMambaConfig(variant="vss-l2", scan="bsm", d_state=8)),
    "vlmamba-csm": _micro(lambda: VLMambaConfig(variant="vss-l2", scan="csm", d_state=8)),
    "mlmamba": _micro(lambda: MLMambaConfig(n_layer=1, d_state=16, headdim=32, chunk_size=32), "prefix"),
}

SYSTEMS: tuple[str, ...] = tuple(_systems(tiny=False))  # the full-size systems (each also as tiny-NAME)

PRESETS: dict[str, Callable[[], MultimodalConfig]] = {
    **_systems(tiny=False), **{f"tiny-{k}": v for k, v in _systems(tiny=True).items()},
    **{f"micro-{k}": v for k, v in MICRO.items()}}


def get_preset(name: str) -> MultimodalConfig:
    """A fresh config for preset ``name``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()


def list_presets() -> list[str]:
    return list(PRESETS)
