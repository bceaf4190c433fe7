"""Parquet records: the one place that knows the columns of data and evaluation files.

Data files hold one puzzle instance per row (`DATA_COLUMNS`); evaluation files one model reply per
row (`EVAL_COLUMNS`). Writes are atomic (`mgsd.io`), so an interrupted job never leaves a
half-written file behind under the declared name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mgsd.io import atomic_write

DATA_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("puzzle", pa.string()),
        ("split", pa.string()),
        ("level", pa.int32()),
        ("seed", pa.int64()),
        ("source", pa.string()),
        ("state", pa.string()),
        ("state_hash", pa.string()),
        ("image", pa.binary()),
        ("solution", pa.string()),
        ("optimal_length", pa.int32()),
    ]
)
DATA_COLUMNS = tuple(DATA_SCHEMA.names)

EVAL_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("puzzle", pa.string()),
        ("level", pa.int32()),
        ("method", pa.string()),
        ("replicate", pa.int32()),  # 0, or k for the method trained with seed + k
        ("external", pa.bool_()),  # a model of config external_models, not trained here
        ("condition", pa.string()),
        ("prompt", pa.string()),
        ("reply", pa.string()),
        ("actions", pa.string()),
        ("success", pa.bool_()),
        ("exact_match", pa.bool_()),
        ("progress_rate", pa.float64()),
        ("parsed", pa.bool_()),
        ("illegal_kind", pa.string()),
        ("parser", pa.string()),  # the answer reading of the six columns above: strict or paper
        ("success_strict", pa.bool_()),  # success under each reading, whichever is `parser`
        ("success_paper", pa.bool_()),
        ("state_parsed", pa.bool_()),
        ("state_correct", pa.bool_()),
        ("state_fields", pa.string()),
        ("reply_tokens", pa.int32()),
        ("seconds", pa.float64()),
    ]
)
EVAL_COLUMNS = tuple(EVAL_SCHEMA.names)


class RecordError(ValueError):
    """A records file is missing, unreadable or lacks a column."""


def write_table(rows: Iterable[dict], schema: pa.Schema, path: str | Path) -> Path:
    """Write rows (dicts with exactly the schema's columns) to Parquet, atomically."""
    path = Path(path)
    rows = list(rows)
    missing = [c for c in schema.names if rows and c not in rows[0]]
    if missing:
        raise RecordError(f"{path}: rows lack columns {missing}")
    table = pa.Table.from_pylist(rows, schema=schema)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_table(path: str | Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read a records file, checking that it exists and has the schema's columns."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"records file not found: {path}")
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise RecordError(f"cannot read {path} as Parquet: {e}") from e
    wanted = columns or schema.names
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise RecordError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def read_data(path: str | Path, columns: list[str] | None = None) -> list[dict]:
    """The rows of a data file as dicts (`state` stays a JSON string)."""
    return read_table(path, DATA_SCHEMA, columns).to_pylist()


def write_data(rows: Iterable[dict], path: str | Path) -> Path:
    return write_table(rows, DATA_SCHEMA, path)


def write_eval(rows: Iterable[dict], path: str | Path) -> Path:
    return write_table(rows, EVAL_SCHEMA, path)
