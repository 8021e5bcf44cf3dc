"""The multimodal model: vision encoder -> connector -> visual tokens spliced into the prompt -> Mamba LM.

    pixel_values (n_images, 3k, S, S) -> vision (n_images, p, d_vision) -> connector (n_images, q, d_model)
    input_ids (b, l) with IMAGE_TOKEN_ID placeholders -> embeddings (b, L, d_model) -> llm -> logits

``image_position``: 'placeholder' puts the visual tokens where ``<image>`` stands in the prompt;
'prefix' (Cobra, ML-Mamba) puts them before all text (the prompt encoder moves the placeholder).

One directory holds a whole model: config.json (vision, connector, llm, layout; ``architectures`` and
``torch_dtype`` for other tools), the weights in bf16 by default (model.safetensors, or shards and
model.safetensors.index.json; keys ``vision.*``, ``connector.*``, ``llm.*``), generation_config.json, the
tokenizer files with the chat template as Jinja, and preprocessor_config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from qmamba.chat_templates import get_template, write_chat_template
from qmamba.errors import CheckpointError, ConfigError
from qmamba.models import checkpoints as ckpt
from qmamba.models.cache import MambaCache
from qmamba.models.connectors import ConnectorConfig, build_connector, connector_config
from qmamba.models.mamba_lm import LMOutput, MambaLM, MambaLMConfig, next_token_loss
from qmamba.models.splice import image_column, splice_at_column, splice_visual_tokens
from qmamba.models.vision import VisionConfig, VisionEncoder
from qmamba.utils.config import config_from_dict, config_to_dict, read_json, write_json

MODEL_TYPE = "qmamba-mllm"
IMAGE_POSITIONS = ("placeholder", "prefix")
_ECOSYSTEM_KEYS = ("architectures", "torch_dtype", "dtype", "transformers_version")  # other tools' fields


@dataclass
class MultimodalConfig:
    vision: VisionConfig
    connector: ConnectorConfig
    llm: MambaLMConfig
    image_position: str = "placeholder"
    chat_template: str = "zephyr"
    model_type: str = MODEL_TYPE

    def __post_init__(self):
        if self.image_position not in IMAGE_POSITIONS:
            raise ConfigError(f"image_position={self.image_position!r}; expected one of {IMAGE_POSITIONS}")

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> MultimodalConfig:
        if data.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"{where}: model_type is {data.get('model_type')!r}, not {MODEL_TYPE!r}; "
                                  f"a language model alone loads with qmamba.MambaLM.from_pretrained")
        missing = [k for k in ("vision", "connector", "llm") if k not in data]
        if missing:
            raise ConfigError(f"{where}: missing section(s) {missing}")
        rest = {k: v for k, v in data.items() if k not in ("vision", "connector", "llm")}
        return cls(
            vision=config_from_dict(VisionConfig, data["vision"], f"{where}: vision"),
            connector=connector_config(data["connector"], f"{where}: connector"),
            llm=MambaLMConfig.from_dict(data["llm"], f"{where}: llm"),
            **config_from_dict(_Layout, rest, where, ignore=_ECOSYSTEM_KEYS).__dict__,
        )

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, "image_position": self.image_position,
                "chat_template": self.chat_template, "vision": config_to_dict(self.vision),
                "connector": config_to_dict(self.connector), "llm": self.llm.to_dict()}


@dataclass
class _Layout:
    image_position: str = "placeholder"
    chat_template: str = "zephyr"
    model_type: str = MODEL_TYPE


class MultimodalModel(nn.Module):
    def __init__(self, config: MultimodalConfig, device=None, dtype=None, init: bool = True,
                 vision: VisionEncoder | None = None, llm: MambaLM | None = None):
        """Random weights, or the given pretrained ``vision`` / ``llm`` (see ``from_components``)."""
        super().__init__()
        self.config = config
        self.vision = vision or VisionEncoder(config.vision, device=device, dtype=dtype)
        self.connector = build_connector(config.connector, self.vision.d_vision, config.llm.d_model,
                                         device=device, dtype=dtype)
        self.llm = llm or MambaLM(config.llm, device=device, dtype=dtype, init=init)

    @classmethod
    def from_components(cls, connector: ConnectorConfig | dict, llm: str | Path | MambaLMConfig,
                        vision: str | Path | list | VisionConfig, image_position: str = "placeholder",
                        chat_template: str = "zephyr", dtype=None, device=None) -> MultimodalModel:
        """A new model from pretrained parts (directories) or configs (random weights); the connector is new.

        ``vision``: a transformers checkpoint directory, or [dinov2_dir, siglip_dir] for the fused encoder.
        ``llm``: a mamba_ssm or transformers Mamba checkpoint directory.
        """
        vis = (VisionEncoder(vision, device=device, dtype=dtype) if isinstance(vision, VisionConfig)
               else VisionEncoder.from_pretrained(vision).to(device=device, dtype=dtype))
        lm = (MambaLM(llm, device=device, dtype=dtype) if isinstance(llm, MambaLMConfig)
              else MambaLM.from_pretrained(llm, dtype=dtype or torch.get_default_dtype(), device=device))
        config = MultimodalConfig(vision=vis.config, connector=connector_config(connector), llm=lm.config,
                                  image_position=image_position, chat_template=chat_template)
        return cls(config, device=device, dtype=dtype, vision=vis, llm=lm)

    @property
    def num_visual_tokens(self) -> int:
        return self.connector.num_tokens(self.vision.num_patches)

    def encode_images(self, pixel_values: Tensor) -> Tensor:
        """(n, 3k, S, S) -> visual tokens (n, q, d_model)."""
        features = self.vision(pixel_values)  # (n, p, d_vision)
        dtype = next(self.connector.parameters()).dtype
        return self.connector(features.to(dtype))

    def embed(self, input_ids: Tensor, pixel_values: Tensor | None, attention_mask: Tensor | None,
              labels: Tensor | None = None, padding_side: str = "right", visual: Tensor | None = None):
        """The spliced rows; ``visual`` (n, q, d): the images' visual tokens when already encoded."""
        if visual is None and pixel_values is not None:
            visual = self.encode_images(pixel_values)
        return splice_visual_tokens(self.llm.embed, input_ids, visual, attention_mask, labels, padding_side)

    def forward(self, input_ids: Tensor, pixel_values: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, padding_side: str = "right", reduction: str = "mean") -> LMOutput:
        """Logits over the spliced sequence (b, L, v); with ``labels`` (b, l) the next-token loss."""
        s = self.embed(input_ids, pixel_values, attention_mask, labels, padding_side)
        out = self.llm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask)
        if labels is None:
            return out
        return LMOutput(out.logits, *next_token_loss(out.logits, s.labels, reduction=reduction))

    # --------------------------------------------------------------- inference
    @property
    def generation_vocab_size(self) -> int:
        return self.config.llm.vocab_size

    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None) -> MambaCache:
        return self.llm.allocate_inference_cache(batch_size, dtype, device)

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None, pixel_values: Tensor | None = None,
                cache: MambaCache | None = None, visual: Tensor | None = None) -> tuple[Tensor, MambaCache]:
        """Prompts (b, l) with placeholders and their images: the spliced rows, left-padded, through the LM's
        prefill -> last-position logits (b, v) and the filled cache (``cache``, or a new one). ``visual``
        (n, q, d): the images already encoded (``encode_images``), instead of ``pixel_values``."""
        s = self.embed(input_ids, pixel_values, attention_mask, padding_side="left", visual=visual)
        return self.llm.prefill(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask, cache=cache)

    def image_column(self, input_ids: Tensor) -> int:
        """The column of the one placeholder every row holds (the layout ``prefill_at_column`` takes)."""
        return image_column(input_ids)

    def prefill_at_column(self, input_ids: Tensor, pixel_values: Tensor, column: int,
                          cache: MambaCache | None = None) -> tuple[Tensor, MambaCache]:
        """``prefill`` for the fixed layout: input_ids (b, l) with one placeholder per row in ``column``, no
        padding; pixel_values (b, 3k, S, S). Shapes follow from the inputs' and nothing synchronises with the
        host, so a CUDA graph can capture it; the same numbers as ``prefill`` up to its all-ones mask."""
        text = self.llm.embed(input_ids.clamp(min=0))  # (b, l, d)
        embeds = splice_at_column(text, self.encode_images(pixel_values), column)  # (b, l - 1 + q, d)
        return self.llm.prefill(inputs_embeds=embeds, cache=cache)

    def step(self, tokens: Tensor, cache: MambaCache) -> Tensor:
        """One new token per row (b,) -> next logits (b, v): the LM's step."""
        return self.llm.step(tokens, cache)

    # -------------------------------------------------------------- checkpoints
    def parameter_counts(self) -> dict[str, int]:
        counts = {name: sum(p.numel() for p in {id(p): p for p in getattr(self, name).parameters()}.values())
                  for name in ("vision", "connector", "llm")}
        counts["total"] = sum(counts.values())
        return counts

    def save_pretrained(self, path: str | Path, tokenizer=None, state_dict: dict | None = None,
                        dtype: torch.dtype | str | None = torch.bfloat16,
                        max_shard_size: int | str = ckpt.DEFAULT_MAX_SHARD_SIZE,
                        max_new_tokens: int = ckpt.DEFAULT_MAX_NEW_TOKENS) -> None:
        """Write a model directory other tools read: config.json (with ``architectures`` and ``torch_dtype``),
        the weights (``model.safetensors``, or shards and ``model.safetensors.index.json`` past
        ``max_shard_size``, e.g. "5GB"), generation_config.json, preprocessor_config.json and (if given) the
        tokenizer, whose tokenizer_config.json carries the chat template as Jinja.

        ``dtype``: the floating-point weights' dtype on disk, bf16 by default (tensors the model keeps in fp32
        at any dtype, ``A_log`` and ``D``, stay fp32); ``torch.float32`` keeps full precision; None writes each
        tensor as it is. ``state_dict``: the full weights when this module's own are sharded (training with
        FSDP). ``max_new_tokens``: the default answer length in generation_config.json.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = dict(state_dict if state_dict is not None else self.state_dict())
        if self.config.llm.tie_embeddings:
            state.pop("llm.lm_head.weight", None)
        target = ckpt.to_torch_dtype(dtype)
        state = ckpt.cast_floats(state, target, self._state_in(target))
        write_json(path / "config.json", {"architectures": [type(self).__name__],
                                          "torch_dtype": ckpt.DTYPE_NAMES[ckpt.stored_dtype(state)],
                                          **self.config.to_dict()})
        write_json(path / "preprocessor_config.json", {"transforms": config_to_dict(self.vision.config)["transforms"],
                                                       "chat_template": self.config.chat_template})
        write_json(path / "generation_config.json",
                   ckpt.generation_config(tokenizer, max_new_tokens, get_template(self.config.chat_template).stop))
        ckpt.save_weights(state, path, max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))
            write_chat_template(path, self.config.chat_template)

    def _state_in(self, dtype: torch.dtype | None) -> dict[str, Tensor]:
        """The (meta) state of this model built in ``dtype``: the dtype each tensor is stored and loaded in."""
        if dtype is None:
            return {}
        with torch.device("meta"):
            return type(self)(self.config, dtype=dtype, init=False).state_dict()

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> MultimodalModel:
        """Load a directory ``save_pretrained`` wrote (one weights file or shards with their index), or one of
        the earlier layout (fp32 model.safetensors, no generation_config, no architectures / torch_dtype).
        ``dtype``: None keeps the stored dtype."""
        path = ckpt.require_dir(path, "MultimodalModel.from_pretrained")
        config = MultimodalConfig.from_dict(read_json(path / "config.json", "multimodal config"),
                                            str(path / "config.json"))
        state = ckpt.load_state_dict(path, f"MultimodalModel.from_pretrained({path})")
        with torch.device("meta"):
            model = cls(config, dtype=dtype or ckpt.stored_dtype(state), init=False)
        model = model.to_empty(device=device or "cpu")
        optional = ("llm.lm_head.weight",) if config.llm.tie_embeddings else ()
        ckpt.load_into(model, state, f"weights in {path}", optional=optional)
        model.llm.tie_weights()
        return model.eval()
