"""Atomic file writes, the one place that does them, and folders copied as hard links.

Every file a job declares is written to a temporary file in the same folder and then renamed
onto its name, so an interrupted job never leaves a half-written file behind under that name.
The written file gets the usual permissions of a new file (0666 less the umask), whatever the
temporary file had.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_atomic_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON (one trailing newline) to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy the contents of `src` to `dst` atomically."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def link_tree(src: str | Path, dst: str | Path) -> Path:
    """`dst` as a copy of the folder `src` made of hard links (a copy with its times where the
    file system allows no link), put in place atomically: an existing `dst` is replaced."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        os.rmdir(tmp)
        shutil.copytree(src, tmp, copy_function=link_file)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def link_file(src: str | Path, dst: str | Path) -> None:
    """A hard link `dst` to `src`, or a copy keeping its times (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
