"""A scratch backbone: a small Qwen3-VL with random weights and a processor made offline.

`build_scratch(cfg, image_size, out_dir)` writes a normal Hugging Face folder (safetensors,
processor, chat template, ``mgsd_stage.json``) that every later stage loads exactly like a
pretrained Qwen3-VL, with `mgsd.model.load.load_model`:

- model: transformers' ``Qwen3VLForConditionalGeneration`` with the sizes of `ScratchConfig`,
  weights drawn from ``ScratchConfig.seed``, tied input/output embeddings (as Qwen3-VL-4B),
  as many embedding rows as the tokenizer has tokens rounded up to 64 (or
  ``embedding_rows``: the rehearsal keeps Qwen3-VL's 151,936);
- tokenizer: byte-level BPE trained with the `tokenizers` library on
  `mgsd.model.prompts.tokenizer_corpus` (deterministic, well under a second), with the chat
  and vision special tokens of Qwen (`SPECIAL_TOKENS`) and a Qwen-style chat template;
- image processor: ``Qwen2VLImageProcessor`` settings for one fixed picture size (pictures are
  already resized to ``image_size`` square; min = max pixels = ``image_size**2``, so it never
  resizes again), Qwen3-VL's normalisation (mean = std = 0.5).

Processor class: transformers 5.23's ``Qwen3VLProcessor`` needs a video processor, and every
video processor needs torchvision, which the CPU environment lacks. The folder therefore names
``PaddleOCRVLProcessor``, transformers' image + tokenizer processor that expands each image
placeholder exactly like ``Qwen3VLProcessor`` (``image_grid_thw.prod() / merge_size**2``
copies of ``<|image_pad|>``) and returns the ``mm_token_type_ids`` that Qwen3-VL needs for its
multimodal rotary positions. Both load with ``AutoProcessor``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PaddleOCRVLProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from mgsd.config import ConfigError, ScratchConfig, check_scratch, to_dict
from mgsd.model import prompts
from mgsd.model.load import save_model

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen2's pre-tokenizer split: digits one by one, so coordinates are always single tokens.
_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)  # Qwen3-VL's preprocessor_config.json
TEMPORAL_PATCH = 2  # Qwen-VL patches pair frames; a still picture is repeated


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with at most `vocab_size` tokens, special tokens first (ids 0-6)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(prompts.tokenizer_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        model_max_length=1 << 20,
    )


def check_image_size(cfg: ScratchConfig, image_size: int) -> None:
    factor = cfg.patch_size * cfg.spatial_merge_size
    if image_size % factor:
        raise ConfigError(
            f"data.image_size: {image_size} is not a multiple of backbone.scratch.patch_size x "
            f"spatial_merge_size = {factor} (the processor would resize every picture)"
        )


def build_processor(cfg: ScratchConfig, image_size: int) -> PaddleOCRVLProcessor:
    check_image_size(cfg, image_size)
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=cfg.patch_size,
        merge_size=cfg.spatial_merge_size,
        temporal_patch_size=TEMPORAL_PATCH,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    tokenizer = build_tokenizer(cfg.vocab_size)
    return PaddleOCRVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )


ROW_MULTIPLE = 64


def embedding_rows(cfg: ScratchConfig, tokens: int) -> int:
    """Rows of the embedding: `cfg.embedding_rows`, or `tokens` rounded up to a multiple of 64
    (a few padding rows at most, which the sampler's support excludes)."""
    if cfg.embedding_rows:
        if cfg.embedding_rows < tokens:
            raise ConfigError(
                f"backbone.scratch.embedding_rows: {cfg.embedding_rows} is smaller than the "
                f"tokenizer ({tokens} tokens)"
            )
        return cfg.embedding_rows
    return -(-tokens // ROW_MULTIPLE) * ROW_MULTIPLE


def hf_config(cfg: ScratchConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen3VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "vocab_size": embedding_rows(cfg, len(tokenizer)),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": list(cfg.mrope_section),
            "mrope_interleaved": True,
        },
    }
    vision = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden_size,
        "num_heads": cfg.vision_num_heads,
        "intermediate_size": cfg.vision_intermediate_size,
        "patch_size": cfg.patch_size,
        "spatial_merge_size": cfg.spatial_merge_size,
        "temporal_patch_size": TEMPORAL_PATCH,
        "out_hidden_size": cfg.hidden_size,  # the merger projects into the text width
        "num_position_embeddings": cfg.num_position_embeddings,
        "deepstack_visual_indexes": list(cfg.deepstack_visual_indexes),
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def check_hf_config(config: Qwen3VLConfig, vocab_in_use: int | None = None) -> None:
    """The Qwen3-VL traps, checked on the built config; ConfigError naming the field."""
    t, v = config.text_config, config.vision_config
    if v.out_hidden_size != t.hidden_size:
        raise ConfigError(
            f"vision_config.out_hidden_size: {v.out_hidden_size} must equal "
            f"text_config.hidden_size = {t.hidden_size}"
        )
    section = list(t.rope_parameters.get("mrope_section", []))
    if sum(section) * 2 != t.head_dim:
        raise ConfigError(
            f"text_config.rope_parameters.mrope_section: {section} must sum to head_dim/2 = "
            f"{t.head_dim / 2}"
        )
    if t.num_attention_heads % t.num_key_value_heads:
        raise ConfigError(
            f"text_config.num_key_value_heads: {t.num_key_value_heads} must divide "
            f"num_attention_heads = {t.num_attention_heads}"
        )
    bad = [i for i in v.deepstack_visual_indexes if not 0 <= i < v.depth]
    if bad:
        raise ConfigError(
            f"vision_config.deepstack_visual_indexes: {bad} not below vision depth = {v.depth}"
        )
    if len(v.deepstack_visual_indexes) > t.num_hidden_layers:
        raise ConfigError(
            f"vision_config.deepstack_visual_indexes: {len(v.deepstack_visual_indexes)} indexes "
            f"but only {t.num_hidden_layers} text layers"
        )
    if math.isqrt(v.num_position_embeddings) ** 2 != v.num_position_embeddings:
        raise ConfigError(
            f"vision_config.num_position_embeddings: {v.num_position_embeddings} is not a "
            "perfect square"
        )
    if v.hidden_size % v.num_heads or (v.hidden_size // v.num_heads) % 4:
        raise ConfigError(
            f"vision_config.num_heads: hidden_size {v.hidden_size} / num_heads {v.num_heads} must "
            "be a whole multiple of 4 (the 2-D rotary embedding splits each head in quarters)"
        )
    for name in (
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
    ):
        if not 0 <= getattr(config, name) < t.vocab_size:
            raise ConfigError(f"{name}: {getattr(config, name)} outside the vocabulary")
    if vocab_in_use is not None and vocab_in_use > t.vocab_size:
        raise ConfigError(
            f"text_config.vocab_size: {t.vocab_size} is smaller than the tokenizer ({vocab_in_use})"
        )


def build_scratch(cfg: ScratchConfig, image_size: int, out_dir: str | Path) -> Path:
    """Write a complete scratch backbone folder to `out_dir` (atomically) and return its path."""
    check_scratch(cfg)
    processor = build_processor(cfg, image_size)
    tokenizer = processor.tokenizer
    config = hf_config(cfg, tokenizer)
    check_hf_config(config, vocab_in_use=len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen3VLForConditionalGeneration(config)
    end_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config = GenerationConfig(
        eos_token_id=end_ids, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    stage_info = {"stage": "scratch", "image_size": image_size, "scratch": to_dict(cfg)}
    return save_model(model, processor, out_dir, stage_info)
