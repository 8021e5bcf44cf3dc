"""Mamba language models (Mamba-1 and Mamba-2), checkpoint-compatible with mamba_ssm's
``MambaLMHeadModel`` and loadable from transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM``.

    backbone.embedding -> backbone.layers.{i} (Block: norm, mixer) -> backbone.norm_f -> lm_head

Inference (the protocol of ``qmamba.infer``): ``prefill`` runs a prompt into a ``MambaCache`` and returns the
last position's logits; ``step`` takes one token per row from the cache to the next logits. Both compute those
logits in one place, ``last_logits``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmamba.errors import CheckpointError, ConfigError, InputError
from qmamba.models import checkpoints as ckpt
from qmamba.models import hf_convert
from qmamba.models.block import Block, GatedMLP
from qmamba.models.cache import MambaCache
from qmamba.models.mamba1 import Mamba, Mamba1Config
from qmamba.models.mamba2 import Mamba2, Mamba2Config
from qmamba.models.norm import RMSNorm
from qmamba.ops import gemv
from qmamba.ops.mamba_inner import pad_to_aligned
from qmamba.utils.config import config_from_dict, config_to_dict, read_json, write_json

_MIXERS = {"Mamba1": (Mamba, Mamba1Config), "Mamba2": (Mamba2, Mamba2Config)}


@dataclass
class MambaLMConfig:
    """mamba_ssm's ``MambaConfig`` (same fields, same config.json), plus ``norm_epsilon``."""

    d_model: int = 2560
    d_intermediate: int = 0
    n_layer: int = 64
    vocab_size: int = 50277
    ssm_cfg: dict = field(default_factory=dict)
    attn_layer_idx: list = field(default_factory=list)
    attn_cfg: dict = field(default_factory=dict)
    rms_norm: bool = True
    residual_in_fp32: bool = True
    fused_add_norm: bool = True
    pad_vocab_size_multiple: int = 8
    tie_embeddings: bool = True
    norm_epsilon: float = 1e-5

    def __post_init__(self):
        if self.attn_layer_idx:
            raise ConfigError(f"attn_layer_idx={self.attn_layer_idx}: hybrid attention layers are not supported")
        if self.layer not in _MIXERS:
            raise ConfigError(f"ssm_cfg.layer={self.layer!r}; expected 'Mamba1' or 'Mamba2'")
        self.mixer_config()  # validate ssm_cfg now, not at first use

    @property
    def layer(self) -> str:
        return self.ssm_cfg.get("layer", "Mamba1")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size + (-self.vocab_size) % m

    def mixer_config(self) -> Mamba1Config | Mamba2Config:
        return _MIXERS[self.layer][1].from_ssm_cfg(self.ssm_cfg, "ssm_cfg")

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> MambaLMConfig:
        return config_from_dict(cls, data, where)

    def to_dict(self) -> dict:
        data = config_to_dict(self)
        if data["norm_epsilon"] == 1e-5:  # keep config.json readable by mamba_ssm itself
            del data["norm_epsilon"]
        return data


@dataclass
class LMOutput:
    logits: Tensor  # (b, l, v)
    loss: Tensor | None = None
    n_target_tokens: int | None = None  # tokens that entered the loss


class MixerModel(nn.Module):
    """Embedding, the stack of Mamba blocks, and the final norm (mamba_ssm's ``MixerModel``)."""

    def __init__(self, config: MambaLMConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        mixer_cls, _ = _MIXERS[config.layer]
        mixer_cfg = config.mixer_config()
        fk = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model, **fk)
        self.layers = nn.ModuleList(
            Block(config.d_model, mixer_cls(mixer_cfg, config.d_model, layer_idx=i, **fk),
                  GatedMLP(config.d_model, config.d_intermediate, **fk) if config.d_intermediate else None,
                  norm_eps=config.norm_epsilon, rms_norm=config.rms_norm,
                  residual_in_fp32=config.residual_in_fp32, **fk)
            for i in range(config.n_layer)
        )
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_epsilon, rms=config.rms_norm, **fk)
        # Mamba-1 layers lay the sequence out channels-first: (d_inner, d_state) for its padding rule
        self.scan_dims = (mixer_cfg.expand * config.d_model, mixer_cfg.d_state) if config.layer == "Mamba1" else None

    def forward(self, inputs_embeds: Tensor, cache: MambaCache | None = None, mask: Tensor | None = None) -> Tensor:
        """(b, l, d) embeddings -> (b, l, d) final hidden states; with ``cache``, continue from and update it.

        A Mamba-1 stack runs a sequence right-padded once (``ops.mamba_inner.pad_to_aligned``, the embeddings
        with zeros and the mask with zeros): every layer takes the padded sequence and its real length ``l``,
        so no carried state sees the padding, and the final hidden states are cropped back to ``l``."""
        hidden, residual, l, length = inputs_embeds, None, inputs_embeds.shape[1], None
        if self.scan_dims is not None:
            hidden, mask = pad_to_aligned(hidden, mask, *self.scan_dims, keeps_state=cache is not None)  # (b, lp, d)
            length = l
        for i, layer in enumerate(self.layers):
            state = cache.layers[i] if cache is not None else None
            hidden, residual = layer(hidden, residual, state=state, mask=mask, length=length)
        hidden = self.norm_f.add_forward(hidden, residual, residual_in_fp32=False)[0]  # (b, lp, d)
        return hidden if hidden.shape[1] == l else hidden[:, :l]

    def step(self, hidden: Tensor, cache: MambaCache) -> Tensor:
        """One token per row: (b, 1, d) embeddings -> (b, 1, d) final hidden states, advancing every layer's state."""
        residual = None
        for layer, state in zip(self.layers, cache.layers):
            hidden, residual = layer.step(hidden, residual, state)
        return self.norm_f.add_forward(hidden, residual, residual_in_fp32=False)[0]


class MambaLM(nn.Module):
    """A Mamba language model with an LM head: ``model(input_ids).logits``, ``prefill`` / ``step`` with a cache
    (``qmamba.generate(model, input_ids)`` decodes with them)."""

    def __init__(self, config: MambaLMConfig, device=None, dtype=None, init: bool = True):
        super().__init__()
        self.config = config
        self.backbone = MixerModel(config, device=device, dtype=dtype)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False, device=device, dtype=dtype)
        if init:
            self.apply(lambda m: _init_weights(m, config.n_layer, 1 if config.d_intermediate == 0 else 2))
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    # ------------------------------------------------------------------ forward
    def embed(self, input_ids: Tensor) -> Tensor:
        vocab = self.config.padded_vocab_size
        capturing = input_ids.is_cuda and torch.cuda.is_current_stream_capturing()  # no host sync in a graph
        if input_ids.numel() and not capturing and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
            raise InputError(f"token ids must lie in [0, {vocab}); got min {int(input_ids.min())}, "
                             f"max {int(input_ids.max())}")
        return self.backbone.embedding(input_ids)

    def forward(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                labels: Tensor | None = None, attention_mask: Tensor | None = None,
                cache: MambaCache | None = None, num_last_tokens: int = 0,
                ignore_index: int = -100, reduction: str = "mean") -> LMOutput:
        """Logits (b, l, v) and, with ``labels`` (b, l), the next-token loss (labels shift inside).

        ``attention_mask`` (b, l): 0 marks left padding, which then changes no state.
        ``cache``: continue from and update the recurrent state (one-token inputs take the step path).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("pass exactly one of input_ids and inputs_embeds")
        hidden = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # (b, l, d)
        if self._takes_step(hidden, cache):
            logits = self._step(hidden, cache)[:, None]  # (b, 1, v)
        else:
            hidden = self._sequence(hidden, attention_mask, cache)  # (b, l, d)
            logits = self.lm_head(hidden[:, -num_last_tokens:] if num_last_tokens > 0 else hidden)
        if labels is None:
            return LMOutput(logits)
        return LMOutput(logits, *next_token_loss(logits, labels, ignore_index, reduction))

    def _takes_step(self, hidden: Tensor, cache: MambaCache | None) -> bool:
        """Whether a call runs as one decode step: one token continuing a filled cache, without autograd (the
        step's kernels have none: a differentiated call runs the token as a prefill of length 1 from the cache,
        with the same numbers)."""
        return cache is not None and cache.seqlen_offset > 0 and hidden.shape[1] == 1 and not self._grads(hidden)

    def _sequence(self, hidden: Tensor, attention_mask: Tensor | None, cache: MambaCache | None) -> Tensor:
        """The backbone over whole sequences, (b, l, d) -> (b, l, d), continuing from and advancing ``cache``."""
        mask = attention_mask.to(torch.float32) if attention_mask is not None else None
        hidden = self.backbone(hidden, cache=cache, mask=mask)  # (b, l, d)
        if cache is not None:
            cache.seqlen_offset += hidden.shape[1]
        return hidden

    def _step(self, hidden: Tensor, cache: MambaCache) -> Tensor:
        """One token per row from ``cache``: embeddings (b, 1, d) -> next logits (b, v)."""
        hidden = self.backbone.step(hidden, cache)  # (b, 1, d)
        cache.seqlen_offset += 1
        return self.last_logits(hidden)

    def last_logits(self, hidden: Tensor) -> Tensor:
        """The LM head on the last position of each row: final hidden states (b, l, d) -> logits (b, v).
        Without autograd it runs as ``ops.gemv`` (a few rows against the largest weight of a decode step)."""
        last = hidden[:, -1]  # (b, d)
        if torch.is_grad_enabled():
            return self.lm_head(last)
        return gemv(last, self.lm_head.weight, self.lm_head.bias)

    def _grads(self, hidden: Tensor) -> bool:
        """Whether autograd records this call (gradients on, and the input or a weight requires one)."""
        return torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in self.parameters()))

    # --------------------------------------------------------------- inference
    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None) -> MambaCache:
        return MambaCache([layer.mixer.allocate_state(batch_size, dtype, device) for layer in self.backbone.layers])

    @property
    def generation_vocab_size(self) -> int:
        return self.config.vocab_size

    def prefill(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, cache: MambaCache | None = None) -> tuple[Tensor, MambaCache]:
        """Run the prompt, ids (b, l) or embeddings (b, l, d): last-position logits (b, v) and the filled cache.

        ``attention_mask`` (b, l): 0 on left padding. ``cache``: the (reset) cache to fill, e.g. static buffers
        for CUDA graphs; a new one by default. No host synchronisation past ``embed``'s range check, which is
        skipped while a CUDA graph is captured."""
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("pass exactly one of input_ids and inputs_embeds")
        hidden = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # (b, l, d)
        if cache is None:
            cache = self.allocate_inference_cache(hidden.shape[0], device=hidden.device)
        return self.last_logits(self._sequence(hidden, attention_mask, cache)), cache

    def step(self, tokens: Tensor, cache: MambaCache) -> Tensor:
        """One new token per row (b,) -> next logits (b, v), advancing ``cache``: the embedding, every layer's
        step, the final norm and the head. The tokens come from this model's own vocabulary, so ``embed``'s
        range check (two host syncs) is left out of this per-token path; nothing in it syncs, so it can be
        captured as a CUDA graph."""
        return self._step(self.backbone.embedding(tokens[:, None]), cache)  # (b, v)

    # -------------------------------------------------------------- checkpoints
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> MambaLM:
        """Load a mamba_ssm (config.json + pytorch_model.bin / model.safetensors) or transformers
        (``MambaForCausalLM`` / ``Mamba2ForCausalLM``) checkpoint directory, one weights file or shards with
        their index. ``dtype``: None keeps the stored dtype."""
        path = ckpt.require_dir(path, "MambaLM.from_pretrained")
        config, fmt = read_lm_config(path)
        state = ckpt.load_state_dict(path, f"MambaLM.from_pretrained({path})")
        if fmt == "transformers":
            state = hf_convert.hf_to_mamba_ssm_keys(state)
        with torch.device("meta"):  # no memory, no init: every tensor comes from the checkpoint
            model = cls(config, dtype=dtype or ckpt.stored_dtype(state), init=False)
        model = model.to_empty(device=device or "cpu")
        ckpt.load_into(model, state, f"weights in {path}",
                       optional=("lm_head.weight",) if config.tie_embeddings else ())
        model.tie_weights()
        return model.eval()

    def save_pretrained(self, path: str | Path, format: str = "mamba_ssm", safe_serialization: bool = True,
                        dtype: torch.dtype | str | None = torch.bfloat16,
                        max_shard_size: int | str = ckpt.DEFAULT_MAX_SHARD_SIZE, tokenizer=None,
                        max_new_tokens: int = ckpt.DEFAULT_MAX_NEW_TOKENS) -> None:
        """Write config.json, the weights and generation_config.json. ``format``: 'mamba_ssm' (its names and
        its config.json, which mamba_ssm reads with no other keys) or 'transformers' (config.json with
        ``architectures`` and ``torch_dtype``). ``dtype``: the floating-point weights' dtype on disk, bf16 by
        default (``A_log`` and ``D`` stay fp32, as the model keeps them; ``torch.float32`` on request; None: as
        they are). Past ``max_shard_size`` (e.g. "5GB") the
        weights are shards with an index. ``tokenizer``: its eos / pad ids go into generation_config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if self.config.tie_embeddings:
            state.pop("lm_head.weight")
        target = ckpt.to_torch_dtype(dtype)
        if target is not None:
            with torch.device("meta"):  # the dtype each tensor has in a model built in ``target``
                like = MambaLM(self.config, dtype=target, init=False).state_dict()
            state = ckpt.cast_floats(state, target, like)
        cfg = self.config.to_dict()
        if format == "transformers":
            hf_convert.check_hf_exportable(cfg, self.config.layer, "save_pretrained")
            full = config_to_dict(self.config) | {"ssm_cfg": _full_ssm_cfg(self.config)}
            cfg = hf_convert.mamba_ssm_to_hf_config(full, self.config.layer, self.config.padded_vocab_size,
                                                    _dims(self))
            cfg["torch_dtype"] = ckpt.DTYPE_NAMES[ckpt.stored_dtype(state)]
            state = hf_convert.mamba_ssm_to_hf_keys(state)
        elif format != "mamba_ssm":
            raise ConfigError(f"format={format!r}; use 'mamba_ssm' or 'transformers'")
        write_json(path / "config.json", cfg)
        write_json(path / "generation_config.json", ckpt.generation_config(tokenizer, max_new_tokens))
        ckpt.save_weights(state, path, max_shard_size, safe=safe_serialization)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def read_lm_config(path: Path) -> tuple[MambaLMConfig, str]:
    """The config of an LM directory and its format ('mamba_ssm' or 'transformers')."""
    raw = read_json(path / "config.json", "Mamba LM config")
    fmt = hf_convert.lm_format(raw)
    where = str(path / "config.json")
    if fmt == "unknown":
        found = raw.get("model_type") or raw.get("architectures") or sorted(raw)[:6]
        raise CheckpointError(
            f"{where} is not a Mamba language model config: expected mamba_ssm fields (d_model, n_layer, ssm_cfg) "
            f"or transformers model_type 'mamba'/'mamba2', found {found!r}"
        )
    if fmt == "transformers":
        raw = hf_convert.hf_to_mamba_ssm_config(raw, where)
    return MambaLMConfig.from_dict(raw, where), fmt


def next_token_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100,
                    reduction: str = "mean") -> tuple[Tensor, int]:
    """Cross-entropy of logits[:, t] against labels[:, t+1]; returns (loss, number of target tokens)."""
    if labels.shape != logits.shape[:2]:
        raise InputError(f"labels shape {tuple(labels.shape)} must equal logits' (batch, length) "
                         f"{tuple(logits.shape[:2])}")
    targets = labels[:, 1:]
    n = int((targets != ignore_index).sum())
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                           ignore_index=ignore_index, reduction="sum")
    if reduction == "mean":
        loss = loss / max(n, 1)
    elif reduction != "sum":
        raise ConfigError(f"reduction={reduction!r}; use 'mean' or 'sum'")
    return loss, n


def _full_ssm_cfg(config: MambaLMConfig) -> dict:
    return {"layer": config.layer, **config_to_dict(config.mixer_config())}


def _dims(model: MambaLM) -> dict:
    mixer = model.backbone.layers[0].mixer
    return {"d_inner": mixer.d_inner, "dt_rank": getattr(mixer, "dt_rank", None),
            "nheads": getattr(mixer, "nheads", None)}


def _init_weights(module: nn.Module, n_layer: int, n_residuals_per_layer: int) -> None:
    """mamba_ssm's initialisation: zero biases, N(0, 0.02) embeddings, rescaled output projections."""
    if isinstance(module, nn.Linear):
        if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    for name, p in module.named_parameters():
        if name in ("out_proj.weight", "fc2.weight"):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            with torch.no_grad():
                p /= math.sqrt(n_residuals_per_layer * n_layer)
