"""A party's checkpoints: whole or absent, never partial; names confined to the job's folder."""

import numpy as np
import pytest

from fedacq.node.checkpoint import Checkpoints


def test_save_load_replace_and_drop(tmp_path):
    cps = Checkpoints(tmp_path / "cp")
    assert cps.names() == [] and cps.load("tree-0001") is None
    cps.save("tree-0001", {"trees": 1}, {"margin": np.arange(4.0), "rows": np.arange(3)})
    cps.save("tree-0002", {"trees": 2})
    meta, arrays = cps.load("tree-0001")
    assert meta == {"trees": 1} and arrays["margin"].tolist() == [0.0, 1.0, 2.0, 3.0]
    cps.save("tree-0001", {"trees": 1, "again": True})
    assert cps.load("tree-0001") == ({"trees": 1, "again": True}, {})
    assert cps.names() == ["tree-0001", "tree-0002"]
    cps.drop("tree-0001")
    assert cps.names() == ["tree-0002"]


def test_an_unfinished_checkpoint_is_not_one(tmp_path):
    cps = Checkpoints(tmp_path)
    (tmp_path / "tree-0003.tmp").mkdir()  # a kill between writing and renaming
    (tmp_path / "tree-0004").mkdir()      # a folder without its meta.json
    assert cps.names() == [] and cps.load("tree-0004") is None


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_names_stay_inside(tmp_path, name):
    with pytest.raises(ValueError):
        Checkpoints(tmp_path).save(name, {})


def test_objects_are_never_pickled(tmp_path):
    with pytest.raises(ValueError):
        Checkpoints(tmp_path).save("x", {}, {"o": np.array([object()])})
