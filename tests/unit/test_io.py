"""The atomic writes of `mgsd.io`: one permission policy, nothing left behind on failure."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mgsd.io import atomic_copy, atomic_write, atomic_write_text, write_atomic_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_write_gets_the_permissions_of_a_new_file(tmp_path):
    mask = os.umask(0o027)
    try:
        written = [
            atomic_write_text(tmp_path / "a.txt", "a"),
            write_atomic_json(tmp_path / "b.json", {"b": 1}),
            atomic_copy(tmp_path / "a.txt", tmp_path / "c.txt"),
            atomic_write(tmp_path / "d.bin", lambda tmp: tmp.write_bytes(b"d")),
        ]
    finally:
        os.umask(mask)
    assert [_mode(p) for p in written] == [0o640] * 4
    assert json.loads((tmp_path / "b.json").read_text()) == {"b": 1}
    assert (tmp_path / "c.txt").read_text() == "a"


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "sub" / "x.txt", fail)
    assert list((tmp_path / "sub").iterdir()) == []
