"""Checkpoints: round trip, refusal of truncated or edited files, and atomic replacement."""

import json
import os

import numpy as np
import pytest

from glassnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "order": np.arange(5)}
    save_checkpoint(path, arrays, {"epoch": 3, "rng": {"state": 2**100 + 7}})
    return path, arrays


def test_round_trip(saved):
    path, arrays = saved
    loaded, meta = load_checkpoint(path)
    assert meta == {"epoch": 3, "rng": {"state": 2**100 + 7}}
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype


def test_file_is_safetensors_not_pickle(saved):
    path, _ = saved
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["w"]["dtype"] == "F32" and header["__metadata__"]["format"].startswith("glassnet")
    assert b"\x80\x04" not in raw[:2]  # no pickle protocol marker


def test_truncated_file_is_refused(saved):
    path, _ = saved
    path.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_edited_weights_are_refused(saved):
    path, _ = saved
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(path)


def test_edited_metadata_is_refused(saved):
    path, _ = saved
    raw = path.read_bytes()
    edited = raw.replace(b'\\"epoch\\": 3', b'\\"epoch\\": 9')
    assert edited != raw
    path.write_bytes(edited)
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a glassnet checkpoint"):
        load_checkpoint(path)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": np.zeros(2)}, {"epoch": 4})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    assert load_checkpoint(path)[1]["epoch"] == 3
