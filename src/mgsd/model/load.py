"""Load and save model folders: one code path for pretrained, scratch and stage outputs.

Every model is a Hugging Face folder (or hub id) read with ``AutoProcessor`` and
``AutoModelForImageTextToText``. `save_model` writes safetensors, the processor (tokenizer,
image processor, chat template) and ``mgsd_stage.json`` (what produced the folder) into a
temporary sibling folder, then renames it into place, so an interrupted save never leaves a
half-written folder under the final name.

Defaults: the first CUDA device when there is one; float32 for trained models (bf16 autocast
does the compute), bfloat16 for frozen ones on CUDA.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from mgsd.config import STAGE_FILE
from mgsd.model.vision import batch_same_size_attention

# `org/name` with no local folder of that name is taken as a hub id; other missing paths are errors.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class _QuietProcessorClass(logging.Filter):
    """Drop transformers' deprecation notice about PaddleOCRVLProcessor's class attribute.

    Scratch folders use that processor class (see `mgsd.model.scratch`); the notice concerns
    transformers' own code and would otherwise open every stage log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "image_processor_class" not in record.getMessage()


logging.getLogger("transformers.processing_utils").addFilter(_QuietProcessorClass())


class ModelLoadError(ValueError):
    """A model folder or hub id cannot be loaded; the message names it."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _resolve(path_or_id: str | Path) -> str:
    path = Path(path_or_id)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {path} is a file, not a model folder")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json (not a model folder)")
        if not any(path.glob("*.safetensors")):
            raise ModelLoadError(f"model folder {path} has no *.safetensors weights")
        return str(path)
    if _HUB_ID.fullmatch(str(path_or_id)):
        return str(path_or_id)
    raise ModelLoadError(f"model folder {path} does not exist")


def load_processor(path_or_id: str | Path) -> Any:
    source = _resolve(path_or_id)
    try:
        return AutoProcessor.from_pretrained(source)
    except Exception as e:
        hint = ""
        if "torchvision" in str(e).lower():
            hint = " (the Qwen3-VL processor of transformers 5.x needs torchvision installed)"
        raise ModelLoadError(
            f"cannot load the processor of {source}: {type(e).__name__}: {e}{hint}"
        ) from e


def load_model(
    path_or_id: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trainable: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """(model, processor) of a folder or hub id; ModelLoadError naming it when it cannot load.

    `trainable=False` gives an eval-mode model with gradients off (teachers, evaluation).
    Weights missing from the checkpoint are an error, never a silent random initialisation.
    """
    source = _resolve(path_or_id)
    device = torch.device(device) if device is not None else default_device()
    # trained weights stay float32 (bf16 autocast does the compute): an AdamW step of lr 1e-6
    # would vanish in bf16 weights; frozen models (teachers, evaluation) load in bf16 on GPUs
    dtype = dtype or (torch.float32 if trainable else default_dtype(device))
    print(
        f"loading {source} on {device} as {str(dtype).removeprefix('torch.')} "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})",
        file=sys.stderr,
    )
    processor = load_processor(source)
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, device_map={"": device}, output_loading_info=True
        )
    except Exception as e:
        raise ModelLoadError(f"cannot load the model of {source}: {type(e).__name__}: {e}") from e
    missing = [k for k in info.get("missing_keys", ()) if "lm_head" not in k]
    if missing:
        raise ModelLoadError(
            f"model folder {source} lacks {len(missing)} weights, e.g. {sorted(missing)[0]}"
        )
    batch_same_size_attention(model)  # one attention call per vision block, not per picture
    model.train(trainable)
    model.requires_grad_(trainable)
    return model, processor


def read_stage_info(path: str | Path) -> dict:
    """The ``mgsd_stage.json`` of a folder ({} for folders made elsewhere, e.g. the hub)."""
    file = Path(path) / STAGE_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{file} is not valid JSON: {e}") from e


def save_model(model: Any, processor: Any, out_dir: str | Path, stage_info: dict) -> Path:
    """Write model + processor + ``mgsd_stage.json`` to `out_dir`, replacing it atomically."""
    if hasattr(model, "peft_config"):
        raise TypeError(f"save_model({out_dir}): merge the LoRA weights first (merge_and_unload)")
    out_dir = Path(out_dir)
    stage_text = json.dumps(stage_info, indent=2, sort_keys=True)  # fails before any write
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / STAGE_FILE).write_text(stage_text + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
