"""StarVector (Rodriguez et al., "StarVector: Generating Scalable Vector Graphics Code from Images").

A ViT image encoder reads the rasterised image; the adapter of the paper maps every encoder token
(CLS + patches, as the reference's `clip` encoder) to an LM embedding; these visual tokens are
the prefix of a StarCoder-architecture code LM that writes the SVG:

    pixels -> image_encoder (CLIPVisionModel) -> post_layernorm ("ln_vision") -> image_projection
           -> [visual tokens | <svg-start> <svg ... </svg> <svg-end>] -> svg_transformer (PrefixLM)

Submodule names follow the reference (`image_encoder`, `image_projection`, `svg_transformer`) so
that `convert_official_starvector_state_dict` is a short, documented renaming.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from transformers import CLIPVisionConfig, CLIPVisionModel, PretrainedConfig, PreTrainedModel

from genstudio.lm import PrefixLM, PrefixLMOutput, VisualAdapter, build_causal_lm

# ---- Config ----

ADAPTER_NORMS = ("layer_norm", "batch_norm", "token_layer_norm")


class StarVectorConfig(PretrainedConfig):
    """Vision tower, LM (architecture + genstudio.lm size preset + overrides), adapter, token ids.

    `adapter_norm`: "layer_norm" = the reference's LayerNorm over (visual tokens, d_lm) jointly;
    "batch_norm" = its BatchNorm1d over the visual-token axis (starvector-1b-im2svg);
    "token_layer_norm" = a per-token LayerNorm. `prompt_with_svg_start`: our checkpoints start
    the SVG with `<svg-start>`; the official im2svg model starts straight at `<svg`.
    """

    model_type = "genstudio-starvector"

    def __init__(self, image_size: int = 64, patch_size: int = 8, vision_hidden_size: int = 192,
                 vision_num_layers: int = 4, vision_num_heads: int = 3, vision_intermediate_size: int | None = None,
                 vision_hidden_act: str = "quick_gelu", use_cls_token: bool = True,
                 lm_arch: str = "gpt_bigcode", lm_size: str = "tiny", lm_overrides: dict | None = None,
                 vocab_size: int = 2048, adapter_norm: str = "layer_norm", adapter_dropout: float = 0.1,
                 svg_start_token_id: int | None = 2, svg_end_token_id: int | None = 3,
                 image_start_token_id: int | None = 4, prompt_with_svg_start: bool = True,
                 max_length_train: int = 1024, eos_token_id: int | None = 0, pad_token_id: int | None = 1, **kwargs):
        if adapter_norm not in ADAPTER_NORMS:
            raise ValueError(f"adapter_norm must be one of {ADAPTER_NORMS}, got {adapter_norm!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        self.vision_hidden_size, self.vision_num_layers = vision_hidden_size, vision_num_layers
        self.vision_num_heads = vision_num_heads
        self.vision_intermediate_size = vision_intermediate_size or 4 * vision_hidden_size
        self.vision_hidden_act, self.use_cls_token = vision_hidden_act, use_cls_token
        self.lm_arch, self.lm_size, self.lm_overrides = lm_arch, lm_size, dict(lm_overrides or {})
        self.vocab_size, self.adapter_norm, self.adapter_dropout = vocab_size, adapter_norm, adapter_dropout
        self.svg_start_token_id, self.svg_end_token_id = svg_start_token_id, svg_end_token_id
        self.image_start_token_id, self.prompt_with_svg_start = image_start_token_id, prompt_with_svg_start
        self.max_length_train = max_length_train  # the reference's name: longest sequence trained on
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    @property
    def num_visual_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + int(self.use_cls_token)


STARVECTOR_CONFIGS: dict[str, dict] = {
    # tests: 17 visual tokens, a one-layer MQA LM
    "tiny": dict(image_size=32, patch_size=8, vision_hidden_size=32, vision_num_layers=1, vision_num_heads=2,
                 lm_overrides=dict(hidden=32, layers=1, heads=2, positions=512, multi_query=True),
                 max_length_train=512),
    # the shipped checkpoint: 65 visual tokens, ~6M parameters, trainable on a 2-core CPU
    "S": dict(image_size=64, patch_size=8, vision_hidden_size=192, vision_num_layers=4, vision_num_heads=3,
              lm_overrides=dict(hidden=256, layers=6, heads=4, positions=1024, multi_query=True),
              max_length_train=1024),
    # starvector-1b-im2svg: the reference's CLIP ViT-L/14 at 224 built with 23 blocks (LAVIS's clip_vit),
    # StarCoderBase-1B, vocabulary 49152 + [PAD], <svg-start>, <image-start>, <caption-start> in the order
    # the reference adds them (from_official re-reads the ids from the checkpoint's tokenizer).
    "1b": dict(image_size=224, patch_size=14, vision_hidden_size=1024, vision_num_layers=23, vision_num_heads=16,
               lm_size="1b", lm_overrides=dict(multi_query=True), vocab_size=49156, adapter_norm="batch_norm",
               eos_token_id=0, pad_token_id=49152, svg_start_token_id=49153, image_start_token_id=49154,
               svg_end_token_id=None, prompt_with_svg_start=False, max_length_train=8192),
}


def starvector_config(preset: str = "S", **overrides) -> StarVectorConfig:
    if preset not in STARVECTOR_CONFIGS:
        raise ValueError(f"unknown StarVector preset {preset!r}: expected one of {', '.join(STARVECTOR_CONFIGS)}")
    return StarVectorConfig(**{**STARVECTOR_CONFIGS[preset], **overrides})


def _vision_config(config: StarVectorConfig) -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=config.vision_hidden_size, intermediate_size=config.vision_intermediate_size,
                            num_hidden_layers=config.vision_num_layers, num_attention_heads=config.vision_num_heads,
                            image_size=config.image_size, patch_size=config.patch_size,
                            hidden_act=config.vision_hidden_act, layer_norm_eps=1e-5)


# ---- Model ----

class StarVectorModel(PreTrainedModel):
    config_class = StarVectorConfig
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "GPTBigCodeBlock", "LlamaDecoderLayer"]

    def __init__(self, config: StarVectorConfig):
        super().__init__(config)
        self.image_encoder = CLIPVisionModel(_vision_config(config))
        lm = build_causal_lm(config.lm_arch, config.vocab_size, config.lm_size, **config.lm_overrides)
        lm.generation_config.eos_token_id = config.svg_end_token_id if config.svg_end_token_id is not None \
            else config.eos_token_id
        lm.generation_config.pad_token_id = config.pad_token_id
        self.svg_transformer = PrefixLM(lm)
        joint = config.num_visual_tokens if config.adapter_norm == "layer_norm" else None
        self.image_projection = VisualAdapter(config.vision_hidden_size, self.svg_transformer.hidden_size,
                                              dropout=config.adapter_dropout, query_length=joint)
        if config.adapter_norm == "batch_norm":
            self.image_projection.norm = nn.BatchNorm1d(config.num_visual_tokens)
        self.svg_tokenizer = None  # attached by from_pretrained / the recipe; saved with the model
        self.post_init()
        # post_init only looks at direct children; the LM's tied head sits one level down in PrefixLM.
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)

    def _init_weights(self, module):
        # Only the adapter reaches here: the encoder and the LM initialise themselves.
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)  # glorot, as upstream
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            module.reset_parameters()

    def reset_vision(self) -> None:
        """Re-initialise the image encoder and adapter (the LM is kept), e.g. after a run whose vision
        side learnt to send a near-constant prefix."""
        dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        self.image_encoder = CLIPVisionModel(_vision_config(self.config)).to(self.device, dtype)
        self.image_projection.apply(self._init_weights)

    @property
    def vision_tower(self) -> nn.Module:
        """The module holding embeddings/encoder/post_layernorm (transformers 4.x nests it in `vision_model`)."""
        return getattr(self.image_encoder, "vision_model", self.image_encoder)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, num_visual_tokens, d_lm) visual tokens."""
        if pixel_values.dim() == 3:
            pixel_values = pixel_values[None]
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be (B, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        hidden = self.image_encoder(pixel_values=pixel_values.to(self.device, dtype)).last_hidden_state
        hidden = self.vision_tower.post_layernorm(hidden)  # the reference's ln_vision, on every token
        if not self.config.use_cls_token:
            hidden = hidden[:, 1:]
        return self.image_projection(hidden)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.LongTensor,
                attention_mask: torch.Tensor | None = None, labels: torch.LongTensor | None = None) -> PrefixLMOutput:
        """Teacher-forced pass; the loss counts SVG tokens only (not visual tokens, pads or -100 labels)."""
        return self.svg_transformer(self.encode_images(pixel_values), input_ids, attention_mask=attention_mask,
                                    labels=labels)

    def prompt_ids(self, tokenizer) -> list[int]:
        ids = tokenizer("<svg", add_special_tokens=False)["input_ids"]
        return ([self.config.svg_start_token_id] if self.config.prompt_with_svg_start else []) + list(ids)

    @torch.no_grad()
    def generate_svg(self, pixel_values: torch.Tensor, tokenizer=None, num_candidates: int = 1,
                     max_new_tokens: int = 512, do_sample: bool | None = None, temperature: float = 1.0,
                     top_p: float = 0.95, top_k: int = 0, seed: int | None = None,
                     progress: bool = False) -> list[list[str]]:
        """For each image, `num_candidates` SVG texts (each starts with `<svg`; cut after `</svg>`).

        Sampling is on by default when several candidates are asked for, greedy otherwise. Uses the
        KV cache (`PrefixLM.generate`); `max_new_tokens` bounds the tokens after the `<svg` prompt.
        """
        tokenizer = tokenizer if tokenizer is not None else self.svg_tokenizer
        if tokenizer is None:
            raise ValueError("generate_svg needs the SVG tokenizer (load the model with load_starvector)")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        do_sample = num_candidates > 1 if do_sample is None else do_sample
        prefix = self.encode_images(pixel_values)
        prompt = torch.tensor([self.prompt_ids(tokenizer)], device=prefix.device).expand(prefix.shape[0], -1)
        stops = [t for t in (self.config.svg_end_token_id, self.config.eos_token_id) if t is not None]
        tokens = self.svg_transformer.generate(
            prefix, prompt, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
            top_p=top_p, top_k=top_k, stop_sequences=["</svg>"], tokenizer=tokenizer, stop_token_ids=stops,
            num_return_sequences=num_candidates, seed=seed, pad_token_id=self.config.pad_token_id,
            progress=progress)
        texts = []
        for text in tokenizer.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False):
            text = "<svg" + text
            end = text.find("</svg>")
            texts.append(text if end < 0 else text[: end + len("</svg>")])
        return [texts[i: i + num_candidates] for i in range(0, len(texts), num_candidates)]

    # ---- Saving and loading (the tokenizer travels with the weights) ----

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.svg_tokenizer is not None:
            self.svg_tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if (folder / "tokenizer.json").exists():
            from transformers import PreTrainedTokenizerFast
            model.svg_tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        return model

    @classmethod
    def from_official(cls, path_or_hub_id: str, dtype: torch.dtype | None = None) -> "StarVectorModel":
        """Load `starvector/starvector-1b-im2svg` (hub id or a local copy; safetensors only)."""
        from genstudio.hub import load_safetensors_folder, resolve
        folder = resolve(path_or_hub_id)
        official = json.loads((folder / "config.json").read_text())
        encoder = official.get("image_encoder_type", "clip")
        if encoder != "clip" or "starcoder2" in str(official.get("starcoder_model_name", "")):
            raise NotImplementedError(f"{path_or_hub_id}: only the StarCoder(1) + CLIP StarVector (1B) is supported; "
                                      f"this one uses image_encoder_type={encoder!r}, "
                                      f"LM {official.get('starcoder_model_name')!r}")
        state = load_safetensors_folder(folder)
        config = _config_from_official(state, official)
        tokenizer = None
        if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(folder)
            for name, token in (("pad_token_id", "[PAD]"), ("svg_start_token_id", "<svg-start>"),
                                ("image_start_token_id", "<image-start>"), ("eos_token_id", "<|endoftext|>")):
                tid = tokenizer.convert_tokens_to_ids(token)
                if tid is not None and tid != tokenizer.unk_token_id:
                    setattr(config, name, tid)
        model = cls(config)
        converted = convert_official_starvector_state_dict(state, vision_prefix=_vision_prefix(model))
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path_or_hub_id}: official weights do not match the StarVector model; "
                             f"missing {sorted(missing)[:10]} ({len(missing)}), "
                             f"unexpected {sorted(unexpected)[:10]} ({len(unexpected)})")
        model.svg_tokenizer = tokenizer
        return model.to(dtype) if dtype is not None else model


def load_starvector(path_or_name) -> tuple[StarVectorModel, object]:
    """A genstudio StarVector checkpoint (folder, shipped name or hub id) and the tokenizer saved with it."""
    from genstudio.hub import resolve
    folder = resolve(path_or_name)
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(f"{folder} has no tokenizer.json: not a genstudio StarVector checkpoint "
                                "(official weights load with StarVectorModel.from_official)")
    # fp32 master weights whatever the stored dtype (shipped checkpoints are fp16); inference then
    # runs under bf16 autocast where that is fast.
    model = StarVectorModel.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), model.svg_tokenizer


# ---- Official weights ----
#
# The reference (starvector/model/models/starvector_base.py, image_encoder/, adapters/, llm/starcoder.py)
# wraps everything in StarVectorForCausalLM.model, so official keys start with "model.":
#   model.svg_transformer.transformer.<GPTBigCodeForCausalLM>  -> svg_transformer.lm.<same>
#       (StarCoderModel.transformer is the HF causal LM: transformer.wte/wpe/h.N/ln_f, lm_head)
#   model.image_projection.{c_fc,c_proj,norm}                  -> image_projection.{same}
#   model.image_encoder.ln_vision                              -> <clip>.post_layernorm (applied to all tokens)
#   model.image_encoder.visual_encoder.<LAVIS/OpenAI ViT>      -> <clip>.<CLIPVisionModel names>:
#       conv1 -> embeddings.patch_embedding, class_embedding -> embeddings.class_embedding,
#       positional_embedding -> embeddings.position_embedding.weight, ln_pre -> pre_layrnorm,
#       transformer.resblocks.N.{ln_1,ln_2,mlp.c_fc,mlp.c_proj,attn.out_proj}
#           -> encoder.layers.N.{layer_norm1,layer_norm2,mlp.fc1,mlp.fc2,self_attn.out_proj},
#       transformer.resblocks.N.attn.in_proj_{weight,bias} -> split in three: self_attn.{q,k,v}_proj
# An absent lm_head.weight is the tied word embedding. <clip> is "image_encoder." (transformers 5)
# or "image_encoder.vision_model." (transformers 4).

_VIT_RENAMES = (
    (r"^conv1\.", "embeddings.patch_embedding."),
    (r"^class_embedding$", "embeddings.class_embedding"),
    (r"^positional_embedding$", "embeddings.position_embedding.weight"),
    (r"^ln_pre\.", "pre_layrnorm."),
    (r"^transformer\.resblocks\.(\d+)\.ln_1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^transformer\.resblocks\.(\d+)\.ln_2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"encoder.layers.\1.mlp.fc2."),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"encoder.layers.\1.self_attn.out_proj."),
)
_IN_PROJ = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")
_LM_BUFFERS = re.compile(r"\.attn\.(masked_)?bias$")  # causal-mask buffers of old GPTBigCode checkpoints


@functools.lru_cache(maxsize=1)
def _default_vision_prefix() -> str:
    tiny = CLIPVisionModel(CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                            num_attention_heads=1, image_size=4, patch_size=4))
    key = next(k for k in tiny.state_dict() if k.endswith("embeddings.patch_embedding.weight"))
    return "image_encoder." + key[: -len("embeddings.patch_embedding.weight")]


def _vision_prefix(model: StarVectorModel) -> str:
    key = next(k for k in model.state_dict() if k.endswith("embeddings.patch_embedding.weight"))
    return key[: -len("embeddings.patch_embedding.weight")]


def convert_official_starvector_state_dict(sd: dict[str, torch.Tensor],
                                           vision_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Rename an official StarVector (StarCoder + CLIP) state dict to StarVectorModel's keys.

    See the mapping above. Keys that fit no rule raise ValueError (listing them)."""
    vision_prefix = vision_prefix or _default_vision_prefix()
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key.startswith("model.svg_transformer.transformer."):
            rest = key[len("model.svg_transformer.transformer."):]
            if not _LM_BUFFERS.search(rest):
                out["svg_transformer.lm." + rest] = value
        elif key.startswith("model.image_projection."):
            out["image_projection." + key[len("model.image_projection."):]] = value
        elif key.startswith("model.image_encoder.ln_vision."):
            out[vision_prefix + "post_layernorm." + key[len("model.image_encoder.ln_vision."):]] = value
        elif key.startswith("model.image_encoder.visual_encoder."):
            rest = key[len("model.image_encoder.visual_encoder."):]
            m = _IN_PROJ.match(rest)
            if m:
                for name, part in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{vision_prefix}encoder.layers.{m.group(1)}.self_attn.{name}_proj.{m.group(2)}"] = part
                continue
            for pattern, repl in _VIT_RENAMES:
                new, n = re.subn(pattern, repl, rest)
                if n:
                    out[vision_prefix + new] = value
                    break
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the official state dict have no StarVectorModel counterpart: "
                         f"{unknown[:10]}")
    if "svg_transformer.lm.lm_head.weight" not in out and "svg_transformer.lm.transformer.wte.weight" in out:
        out["svg_transformer.lm.lm_head.weight"] = out["svg_transformer.lm.transformer.wte.weight"]
    return out


def _config_from_official(sd: dict[str, torch.Tensor], official: dict) -> StarVectorConfig:
    """Sizes read off the tensors (the official config.json does not name the ViT's)."""
    vit, lm = "model.image_encoder.visual_encoder.", "model.svg_transformer.transformer.transformer."
    try:
        conv, pos, wte = sd[vit + "conv1.weight"], sd[vit + "positional_embedding"], sd[lm + "wte.weight"]
        c_attn = sd[lm + "h.0.attn.c_attn.weight"]
    except KeyError as e:
        raise ValueError(f"not an official StarVector (StarCoder + CLIP) state dict: {e.args[0]} is missing") from None
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((pos.shape[0] - 1) ** 0.5)
    count = lambda prefix: len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})  # noqa: E731
    hidden = wte.shape[1]
    heads = int(official.get("num_attention_heads", max(1, hidden // 128)))
    norm = sd.get("model.image_projection.norm.weight")
    adapter_norm = "batch_norm" if "model.image_projection.norm.running_mean" in sd else \
        "layer_norm" if norm is not None and norm.dim() == 2 else "token_layer_norm"
    return starvector_config(
        "1b", image_size=grid * patch, patch_size=patch, vision_hidden_size=width,
        vision_num_layers=count(vit + "transformer.resblocks."), vision_num_heads=max(1, width // 64),
        vision_intermediate_size=sd[vit + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        vocab_size=wte.shape[0], adapter_norm=adapter_norm,
        lm_overrides=dict(hidden=hidden, layers=count(lm + "h."), heads=heads,
                          positions=sd[lm + "wpe.weight"].shape[0],
                          multi_query=c_attn.shape[0] == hidden + 2 * (hidden // heads),
                          ffn=sd[lm + "h.0.mlp.c_fc.weight"].shape[0]))
