"""Scratch backbone folders and the one loading path: build, save, load, bad input."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration

from mgsd import puzzles
from mgsd.config import ConfigError
from mgsd.model import prompts, scratch
from mgsd.model.batching import Example, collate_train, model_inputs
from mgsd.model.load import STAGE_FILE, ModelLoadError, load_model, read_stage_info, save_model


def _batch(processor, image_size=64):
    fl = puzzles.get("frozenlake")
    state = fl.generate(4, 1)
    return collate_train(
        processor,
        [
            Example(
                prompts.student_messages("frozenlake", "compact"),
                prompts.reply_text("frozenlake", state),
                fl.render(state, image_size),
            ),
            Example(prompts.symbolic_messages("frozenlake", state, "compact"), "size 4"),
        ],
    )


def _logits(model, batch):
    with torch.no_grad():
        return model(**model_inputs(batch)).logits


def test_folder_loads_with_auto_classes(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "chat_template.jinja", STAGE_FILE} <= names
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert isinstance(model, Qwen3VLForConditionalGeneration)
    assert model.config.vision_config.out_hidden_size == model.config.text_config.hidden_size
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert read_stage_info(tiny_model_dir)["stage"] == "scratch"
    assert processor.image_token == "<|image_pad|>"


def test_weights_are_the_seeded_random_init(tiny_model_dir, tiny_scratch_config, tiny):
    model, processor = tiny
    config = scratch.hf_config(tiny_scratch_config, processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_scratch_config.seed)
        fresh = Qwen3VLForConditionalGeneration(config).eval()
    batch = _batch(processor)
    assert torch.equal(_logits(fresh, batch), _logits(model, batch))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_scratch_config.seed + 1)
        other = Qwen3VLForConditionalGeneration(config).eval()
    assert not torch.allclose(_logits(other, batch), _logits(model, batch))


def test_save_load_round_trip_gives_identical_logits(tiny, tmp_path):
    model, processor = tiny
    out = save_model(model, processor, tmp_path / "copy", {"stage": "test", "n": 1})
    again, processor2 = load_model(out, device="cpu", trainable=False)
    batch = _batch(processor2)
    assert torch.equal(_logits(model, batch), _logits(again, batch))
    assert json.loads((out / STAGE_FILE).read_text()) == {"stage": "test", "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no temporary folder left behind
    # saving over an existing folder replaces it
    save_model(again, processor2, out, {"stage": "second"})
    assert read_stage_info(out) == {"stage": "second"}
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]


def test_failed_save_leaves_nothing(tiny, tmp_path):
    model, processor = tiny
    with pytest.raises(TypeError):
        save_model(model, processor, tmp_path / "bad", {"not json": object()})
    assert list(tmp_path.iterdir()) == []


def test_load_defaults_cpu_fp32_and_trainable_flag(tiny_model_dir):
    model, _ = load_model(tiny_model_dir)
    if not torch.cuda.is_available():
        assert next(model.parameters()).dtype == torch.float32
    assert model.training and all(p.requires_grad for p in model.parameters())
    frozen, _ = load_model(tiny_model_dir, trainable=False)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_tokenizer_is_fast_deterministic_and_fits(tiny_scratch_config):
    start = time.perf_counter()
    first = scratch.build_tokenizer(tiny_scratch_config.vocab_size)
    assert time.perf_counter() - start < 5
    second = scratch.build_tokenizer(tiny_scratch_config.vocab_size)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert len(first) <= tiny_scratch_config.vocab_size
    ids = [first.convert_tokens_to_ids(t) for t in scratch.SPECIAL_TOKENS]
    assert ids == list(range(len(scratch.SPECIAL_TOKENS)))
    state = puzzles.get("maze").generate(5, 3)
    text = prompts.reply_text("maze", state)
    assert first.decode(first(text)["input_ids"]) == text
    # a coordinate is one token per digit, never merged with its neighbours
    assert first.tokenize("start 0 1") == first.tokenize("start") + first.tokenize(" 0 1")


def test_chat_template_is_qwen_style(tiny):
    _, processor = tiny
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "plan"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>plan<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    plain = processor.apply_chat_template(messages[:1], add_generation_prompt=False, tokenize=False)
    assert plain == "<|im_start|>system\nbe brief<|im_end|>\n"


def test_processor_keeps_the_fixed_picture_size(tiny, tiny_image_size):
    _, processor = tiny
    size = tiny_image_size
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    out = processor(text=["<|image_pad|>"], images=[image], padding=False)
    grid = size // 16
    assert np.asarray(out["image_grid_thw"]).tolist() == [[1, grid, grid]]
    assert out["input_ids"][0].count(
        processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ) == (grid * grid // 4)
    assert out["mm_token_type_ids"][0] == [1] * (grid * grid // 4)
    # first patch (row 0, col 0): channels x temporal copies x 16 x 16, normalised with 0.5/0.5
    patch = np.asarray(out["pixel_values"])[0].reshape(3, 2, 16, 16)[:, 0]
    expected = (pixels[:16, :16].transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(patch, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mrope_section": (4, 4, 4)}, "mrope_section"),
        ({"deepstack_visual_indexes": (2,)}, "deepstack_visual_indexes"),
        ({"num_position_embeddings": 15}, "num_position_embeddings"),
    ],
)
def test_scratch_config_traps_name_the_field(
    tiny_scratch_config, tiny_image_size, tmp_path, change, field
):
    bad = dataclasses.replace(tiny_scratch_config, **change)
    with pytest.raises(ConfigError, match=field):
        scratch.build_scratch(bad, tiny_image_size, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_built_config_checks_name_the_field(tiny_scratch_config, tiny):
    _, processor = tiny
    config = scratch.hf_config(tiny_scratch_config, processor.tokenizer)
    config.vision_config.out_hidden_size = 32
    with pytest.raises(ConfigError, match="out_hidden_size"):
        scratch.check_hf_config(config)
    odd_heads = dataclasses.replace(tiny_scratch_config, vision_hidden_size=36, vision_num_heads=2)
    with pytest.raises(ConfigError, match="vision_config.num_heads"):
        scratch.check_hf_config(scratch.hf_config(odd_heads, processor.tokenizer))
    with pytest.raises(ConfigError, match="image_size"):
        scratch.build_processor(tiny_scratch_config, 48)


def test_missing_and_corrupt_folders_name_the_path(tiny_model_dir, tmp_path):
    missing = tmp_path / "runs" / "nothing" / "model"
    with pytest.raises(ModelLoadError, match=str(missing)):
        load_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=f"{empty}.*config.json"):
        load_model(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=str(broken)):
        load_model(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=str(broken)):
        load_model(broken)


def test_embedding_rows_follow_the_tokenizer(tiny_model_dir, tiny_scratch_config, tmp_path):
    """The embedding has the tokenizer's size rounded up to 64 (few rows the sampler never
    draws), unless `embedding_rows` asks for more; fewer rows than tokens is an error."""
    model, processor = load_model(tiny_model_dir, device="cpu", trainable=False)
    n = len(processor.tokenizer)
    rows = model.get_output_embeddings().weight.shape[0]
    assert rows % 64 == 0 and n <= rows < n + 64
    assert model.config.text_config.vocab_size == rows
    wide = dataclasses.replace(tiny_scratch_config, embedding_rows=n + 100)
    assert scratch.hf_config(wide, processor.tokenizer).text_config.vocab_size == n + 100
    with pytest.raises(ConfigError, match="embedding_rows: .* smaller than the tokenizer"):
        scratch.hf_config(dataclasses.replace(wide, embedding_rows=n - 1), processor.tokenizer)


# Qwen3-VL-4B-Instruct's public config.json: the sizes the rehearsal preset must reproduce
QWEN3_VL_4B = {
    "text_config": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                    "vocab_size": 151936, "rope_theta": 5000000.0, "mrope_section": [24, 20, 20]},
    "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096,
                      "num_heads": 16, "patch_size": 16, "spatial_merge_size": 2,
                      "temporal_patch_size": 2, "out_hidden_size": 2560,
                      "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]},
    "tie_word_embeddings": True,
}  # fmt: skip


def test_the_rehearsal_backbone_has_the_4b_shape():
    """presets/rehearsal_4b.yaml builds a scratch model of exactly Qwen3-VL-4B's sizes (every
    embedding row kept) and parameter count, counted on the meta device."""
    from pathlib import Path

    from mgsd.config import load_file

    repo = Path(__file__).resolve().parents[2]
    cfg = load_file(
        repo / "pipeline_config.yaml", repo / "presets/qwen3vl_4b.yaml",
        repo / "presets/rehearsal_4b.yaml",
    ).backbone.scratch  # fmt: skip
    config = scratch.hf_config(cfg, scratch.build_tokenizer(cfg.vocab_size))
    t, v = config.text_config, config.vision_config
    for key, want in QWEN3_VL_4B["text_config"].items():
        got = t.rope_parameters[key] if key in ("rope_theta", "mrope_section") else getattr(t, key)
        assert got == want, key
    for key, want in QWEN3_VL_4B["vision_config"].items():
        assert getattr(v, key) == want, key
    assert config.tie_word_embeddings is QWEN3_VL_4B["tie_word_embeddings"]
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 1) == 4437.8, params  # what the public config builds
