"""The benchmark importers: every public instance imports, and every defect is named."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mgsd.data import benchmarks
from mgsd.puzzles import frozenlake, minibehaviour


def test_all_600_vsp_maps_import_and_render_pixel_identical(benchmarks_dir):
    instances = benchmarks.load_vsp_frozenlake(benchmarks_dir)  # checks each picture itself
    assert len(instances) == 600 and len({i.id for i in instances}) == 600
    assert Counter(i.level for i in instances) == {n: 100 for n in range(3, 9)}
    first = instances[0]
    assert (first.id, first.puzzle, first.source, first.level) == (
        "vsp-frozenlake-level3-0", "frozenlake", "vsp", 3
    )  # fmt: skip
    # level3/table/0.txt: row 1 "_ * _", row 2 "_ _ _", row 3 "_ @ _"
    assert first.state.grid == ("FGF", "FFF", "FSF")
    for inst in instances[::50]:
        picture = np.asarray(Image.open(io.BytesIO(inst.image_png)).convert("RGB"))
        assert np.array_equal(picture, frozenlake.render_native(inst.state))
        assert frozenlake.optimal_length(inst.state) >= 1
    assert [i.id for i in benchmarks.load_vsp_frozenlake(benchmarks_dir, levels=[5])][:2] == [
        "vsp-frozenlake-level5-0",
        "vsp-frozenlake-level5-1",
    ]


def test_all_403_vprl_instances_import_with_matching_optimal_lengths(benchmarks_dir):
    instances = benchmarks.load_vprl_minibehaviour(benchmarks_dir)
    assert len(instances) == 403 and len({i.id for i in instances}) == 403
    assert Counter(i.level for i in instances) == {5: 204, 6: 199}
    rows = [
        json.loads(line) for line in (benchmarks_dir / "vprl_minibehaviour" / "test.jsonl").open()
    ]
    for inst, row in zip(instances, rows, strict=True):
        assert inst.id == f"vprl-minibehaviour-{row['index']}" and inst.image_png is None
        assert minibehaviour.optimal_length(inst.state) == len(row["optimal_trajectory"]) - 1
        assert list(inst.state.agent) == row["start_pos"]
    assert len(benchmarks.load_vprl_minibehaviour(benchmarks_dir, levels=[6])) == 199


def test_trajectory_actions():
    trajectory = [[[2, 4], False], [[2, 3], False], [[2, 3], True], [[3, 3], True], [[3, 3], False]]
    assert benchmarks.trajectory_actions(trajectory) == ["L", "PICK", "D", "DROP"]
    with pytest.raises(ValueError, match="no single action"):
        benchmarks.trajectory_actions([[[0, 0], False], [[1, 1], False]])


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/vsp_frozenlake"):
        benchmarks.load_vsp_frozenlake(tmp_path)
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        benchmarks.load_vprl_minibehaviour(tmp_path)


@pytest.fixture
def vsp_copy(benchmarks_dir, tmp_path):
    """A one-map VSP folder in tmp_path (level3, map 0) to tamper with."""
    for kind, suffix in (("table", "txt"), ("img", "png")):
        target = tmp_path / "vsp_frozenlake" / "level3" / kind
        target.mkdir(parents=True)
        shutil.copy(benchmarks_dir / "vsp_frozenlake" / "level3" / kind / f"0.{suffix}", target)
    return tmp_path / "vsp_frozenlake" / "level3"


def test_vsp_defects_are_named(vsp_copy):
    root = vsp_copy.parent.parent
    assert len(benchmarks.load_vsp_frozenlake(root)) == 1
    with pytest.raises(FileNotFoundError, match="level4"):
        benchmarks.load_vsp_frozenlake(root, levels=[4])
    picture = np.asarray(Image.open(vsp_copy / "img" / "0.png").convert("RGB")).copy()
    picture[5, 5] = 255 - picture[5, 5]
    Image.fromarray(picture).save(vsp_copy / "img" / "0.png")
    with pytest.raises(ValueError, match=r"img/0.png: our render of 0.txt differs"):
        benchmarks.load_vsp_frozenlake(root)
    table = (vsp_copy / "table" / "0.txt").read_text()
    (vsp_copy / "table" / "0.txt").write_text(table.replace("@", "?"))
    with pytest.raises(ValueError, match=r"table/0.txt: table line 4: unknown cell '\?'"):
        benchmarks.load_vsp_frozenlake(root)
    (vsp_copy / "table" / "0.txt").write_text(table.replace("*", "_"))
    with pytest.raises(ValueError, match=r"table/0.txt: .*0 goal cells"):
        benchmarks.load_vsp_frozenlake(root)


def test_vprl_defects_are_named(benchmarks_dir, tmp_path):
    lines = (benchmarks_dir / "vprl_minibehaviour" / "test.jsonl").read_text().splitlines()[:3]
    folder = tmp_path / "vprl_minibehaviour"
    folder.mkdir()
    row = json.loads(lines[1])
    path = row["optimal_trajectory"]  # (2, 1) -> (1, 1) -> pick -> (2, 1) -> drop
    jump = {**row, "optimal_trajectory": [path[0], [[0, 0], False], *path[2:]]}
    early_pick = [[[2, 1], False], [[2, 1], True], [[1, 1], True], [[2, 1], True], [[2, 1], False]]
    cases = [
        (json.dumps(jump), r"line 2: ValueError: no single action"),
        (json.dumps({**row, "optimal_trajectory": early_pick}), "line 2: .*does not replay"),
        (json.dumps({**row, "optimal_trajectory": row["optimal_trajectory"][:-1]}), "line 2: .*optimal length"),
        (json.dumps({**row, "table_pos": row["table_pos"][:5]}), "line 2: .*table must be a list of 6"),
        (json.dumps({**row, "printer_neighbors": []}), "line 2: .*printer_neighbors"),
        (json.dumps({k: v for k, v in row.items() if k != "level"}), "line 2: KeyError"),
        ("{not json", "line 2: JSONDecodeError"),
        (lines[0], "line 2: duplicate id vprl-minibehaviour-0"),
    ]  # fmt: skip
    for bad, message in cases:
        (folder / "test.jsonl").write_text("\n".join([lines[0], bad, lines[2]]) + "\n")
        with pytest.raises(ValueError, match=message):
            benchmarks.load_vprl_minibehaviour(tmp_path)
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    assert [i.id for i in benchmarks.load_vprl_minibehaviour(tmp_path)] == [
        f"vprl-minibehaviour-{k}" for k in range(3)
    ]
