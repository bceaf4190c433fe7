"""Backbones, prompts, batching and generation: one code path for every model.

- `mgsd.model.scratch`: `build_scratch(cfg, image_size, out_dir)` writes a small random
  Qwen3-VL with an offline tokenizer and processor as a Hugging Face folder.
- `mgsd.model.load`: `load_model(path_or_id, device, dtype, trainable) -> (model, processor)`
  for hub ids, scratch folders and stage outputs alike; `save_model` (atomic).
- `mgsd.model.prompts`: the wording of every prompt and target reply (torch-free).
- `mgsd.model.batching`: `Example`, `collate_train`, `collate_generate`, `collate_score`,
  `score_replies`.
- `mgsd.model.generate`: `generate(...) -> list[Generation]` with per-token log-probs.

Submodules are imported explicitly (this file imports nothing), so reading prompts does not
pull in torch or transformers.
"""
