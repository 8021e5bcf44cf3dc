"""What ``qmamba bench`` measures and at which sizes (one typed config, filled from the command line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from qmamba.errors import ConfigError

SECTIONS = ("lm-mamba1", "lm-mamba2", "vqa", "vqa-train")
DEFAULT_SECTIONS = ("lm-mamba1", "lm-mamba2", "vqa")
PEERS = ("mamba_ssm", "transformers")


def _presets(names: tuple[str, ...]) -> tuple[str, ...]:
    """Full-size system presets by name, "all" for every one; an unknown name is an error listing them."""
    from qmamba.models.presets import SYSTEMS

    out = [n for name in names for n in (SYSTEMS if name == "all" else (name,))]
    bad = [n for n in out if n not in SYSTEMS]
    if bad:
        raise ConfigError(f"bench: unknown preset(s) {bad}; choose from all, {', '.join(SYSTEMS)}")
    return tuple(dict.fromkeys(out))


@dataclass
class BenchOptions:
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    device: str = "auto"
    quick: bool = False  # 4-layer models, few repeats: a smoke test of the whole bench
    tiny: bool | None = None  # toy shapes (tests; CPU); None: tiny on CPU, full size on a GPU
    repeats: int = 10
    warmup: int = 2
    decode_tokens: int = 64  # decode ms/token = (time of 1 + n new tokens - time of 1) / n
    decode_prompt_len: int = 32
    batch_decode: int = 16
    prompt_len: int = 800
    train_len: int = 800
    train_batch: int = 1
    ref_backend: bool = False  # also time qmamba on the pure-PyTorch ops (slow)
    peers: tuple[str, ...] = PEERS
    transformers_train: bool = False
    presets: tuple[str, ...] = ("qmamba-128", "cobra")  # "all": every full-size system (presets.SYSTEMS)
    vqa_batch: int = 64
    question_len: int = 40
    answer_tokens: int = 5
    train_presets: tuple[str, ...] = ("qmamba-256",)  # "all" as for presets
    local_attention: str = "naive"  # the query connectors' local cross-attention (ops.local_attention.ALGORITHMS)
    seed: int = 0

    def __post_init__(self):
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ConfigError(f"bench: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
        bad = [p for p in self.peers if p not in PEERS]
        if bad:
            raise ConfigError(f"bench: unknown peer(s) {bad}; choose from {', '.join(PEERS)}")
        self.presets, self.train_presets = _presets(self.presets), _presets(self.train_presets)
        from qmamba.ops.local_attention import ALGORITHMS

        if self.local_attention not in ALGORITHMS:
            raise ConfigError(f"bench: local attention {self.local_attention!r}; choose from {', '.join(ALGORITHMS)}")
        if min(self.repeats, self.decode_tokens, self.batch_decode, self.prompt_len, self.train_len,
               self.train_batch, self.vqa_batch, self.question_len, self.answer_tokens) < 1:
            raise ConfigError("bench: repeats, token counts, lengths and batch sizes must be >= 1")

    def resolved(self, on_gpu: bool) -> BenchOptions:
        """Defaults that depend on the device and --quick filled in."""
        changes = asdict(self)
        changes["tiny"] = (not on_gpu) if self.tiny is None else self.tiny
        if self.quick:
            changes.update(repeats=min(self.repeats, 3), warmup=min(self.warmup, 1),
                           decode_tokens=min(self.decode_tokens, 8))
        if not on_gpu:
            changes["peers"] = ()
        return BenchOptions(**changes)

    def to_dict(self) -> dict:
        return asdict(self)
