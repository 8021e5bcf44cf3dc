"""Peers on the same weights: mamba_ssm's ``MambaLMHeadModel`` (its CUDA-graph decoding, ``cg=True``) and
transformers' ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` (as installed: eager, or mamba_ssm's kernels when
transformers finds them). Both are used only when importable; parameter names match qmamba's (transformers
spells the embedding ``embeddings``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect

import torch
from torch import Tensor

from qmamba.bench.runner import LMRunner
from qmamba.models import hf_convert
from qmamba.models.mamba_lm import MambaLM


def peer_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def peer_version(name: str) -> str | None:
    if not peer_available(name):
        return None
    return getattr(importlib.import_module(name), "__version__", "?")


def _param_dtype(model: MambaLM) -> torch.dtype:
    return model.lm_head.weight.dtype


class MambaSSMRunner(LMRunner):
    name = "mamba_ssm"

    def __init__(self, model: MambaLM, device: torch.device):
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        names = {f.name for f in dataclasses.fields(MambaConfig)}
        cfg = MambaConfig(**{k: v for k, v in model.config.to_dict().items() if k in names})
        self.model = MambaLMHeadModel(cfg, device=device, dtype=_param_dtype(model)).eval()
        self.model.load_state_dict(model.state_dict(), strict=True)

    def generate(self, ids: Tensor, n: int) -> None:
        self.model.generate(ids, max_length=ids.shape[1] + n, cg=True, top_k=1)

    def prefill(self, ids: Tensor) -> None:
        from mamba_ssm.utils.generation import InferenceParams

        params = InferenceParams(max_seqlen=ids.shape[1] + 1, max_batch_size=ids.shape[0])
        self.model(ids, inference_params=params, num_last_tokens=1)

    def logits(self, ids: Tensor) -> Tensor:
        return self.model(ids).logits

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def close(self) -> None:
        self.model = None  # its graph cache lives on the model (_decoding_cache)


class TransformersRunner(LMRunner):
    name = "transformers"
    train_by_default = False  # slow: --transformers-train adds it
    slow = True

    def __init__(self, model: MambaLM, device: torch.device):
        import transformers

        layer = model.config.layer
        full = dataclasses.asdict(model.config) | {"ssm_cfg": {"layer": layer, **dataclasses.asdict(
            model.config.mixer_config())}}
        mixer = model.backbone.layers[0].mixer
        dims = {"d_inner": mixer.d_inner, "dt_rank": getattr(mixer, "dt_rank", None),
                "nheads": getattr(mixer, "nheads", None)}
        hf = hf_convert.mamba_ssm_to_hf_config(full, layer, model.config.padded_vocab_size, dims)
        cls_name = "Mamba2ForCausalLM" if layer == "Mamba2" else "MambaForCausalLM"
        config_cls = transformers.Mamba2Config if layer == "Mamba2" else transformers.MambaConfig
        config = config_cls(**{k: v for k, v in hf.items() if k not in ("architectures", "model_type")})
        with torch.device(device):
            self.model = getattr(transformers, cls_name)(config).to(_param_dtype(model)).eval()
        missing, unexpected = self.model.load_state_dict(hf_convert.mamba_ssm_to_hf_keys(model.state_dict()),
                                                         strict=False)
        if [k for k in missing if "lm_head" not in k] or unexpected:
            raise RuntimeError(f"transformers weights do not match: missing {missing[:4]}, unexpected {unexpected[:4]}")
        self._keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def generate(self, ids: Tensor, n: int) -> None:
        self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                            do_sample=False, pad_token_id=0)

    def prefill(self, ids: Tensor) -> None:
        self.model(ids, use_cache=True, **({"logits_to_keep": 1} if self._keep else {}))

    def logits(self, ids: Tensor) -> Tensor:
        return self.model(ids, use_cache=False).logits

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def close(self) -> None:
        self.model = None


def peer_runner(name: str, model: MambaLM, device: torch.device) -> LMRunner:
    return {"mamba_ssm": MambaSSMRunner, "transformers": TransformersRunner}[name](model, device)
