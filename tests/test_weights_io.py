"""Weights format and safety: metadata, integrity, and one clear error for every bad file."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import nasnet_det
from nasnet_det.weights import WeightsError, load_state_dict, load_weights_into, save_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return nasnet_det.build_nasnet("nasnet_a", dataset="cifar", num_cells=3, penultimate_filters=48, num_classes=10)


def test_safetensors_roundtrip_with_metadata(small_model, tmp_path):
    path = save_weights(small_model.state_dict(), tmp_path / "m.safetensors", model=small_model, source="unit test")
    state, meta = load_state_dict(path)
    assert meta["format"] == "nasnet_det" and meta["source"] == "unit test"
    assert json.loads(meta["genotype"])["normal"]["blocks"], "the genotype travels with the weights"
    assert meta["num_cells"] == "3" and meta["num_conv_filters"] == "2" and meta["num_classes"] == "10"
    assert len(json.loads(meta["cell_names"])) == len(small_model.cells)
    assert len(meta["sha256"]) == 64
    fresh = nasnet_det.build_nasnet("nasnet_a", dataset="cifar", num_cells=3, penultimate_filters=48, num_classes=10)
    load_weights_into(fresh, path)
    for k, v in small_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_truncated_safetensors(small_model, tmp_path):
    path = save_weights(small_model.state_dict(), tmp_path / "m.safetensors", model=small_model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_state_dict(path)


def test_corrupt_tensor_bytes_fail_the_checksum(small_model, tmp_path):
    path = save_weights(small_model.state_dict(), tmp_path / "m.safetensors", model=small_model)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip bits inside the tensor data; the header still parses
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_state_dict(path)


def test_garbage_and_truncated_pth(small_model, tmp_path):
    garbage = tmp_path / "g.pth"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(WeightsError, match="not a PyTorch file|truncated or corrupt"):
        load_state_dict(garbage)
    good = tmp_path / "m.pth"
    torch.save(small_model.state_dict(), good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_state_dict(good)
    empty = tmp_path / "e.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_state_dict(empty)
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pth")


class Payload:
    """An arbitrary object: unpickling it would import and run code."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_with_arbitrary_objects_is_refused(small_model, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_model.state_dict(), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="refused.*--allow-unsafe-pickle"):
        load_state_dict(path)
    state, _ = load_state_dict(path, allow_unsafe_pickle=True)  # the explicit opt-in works
    assert set(state) == set(small_model.state_dict())

    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"w": np.zeros(3)}, "x": Payload()}))
    with pytest.raises(WeightsError, match="arbitrary objects.*refused"):
        load_state_dict(pkl)


def test_detectron2_style_pkl_of_numpy_arrays_loads_safely(tmp_path):
    pkl = tmp_path / "d2.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
                     "__author__": "x", "matching_heuristics": False}, f)
    state, meta = load_state_dict(pkl)
    assert torch.equal(state["a.weight"], torch.arange(6.0).reshape(2, 3))
    assert meta["__author__"] == "x"


def test_wrong_architecture_is_one_clear_error(small_model, tmp_path):
    path = save_weights(small_model.state_dict(), tmp_path / "m.safetensors", model=small_model)
    other = nasnet_det.build_nasnet("nasnet_a", dataset="cifar", num_cells=6, penultimate_filters=96, num_classes=10)
    with pytest.raises(WeightsError, match="does not fit this model .*different architecture"):
        load_weights_into(other, path)


def test_convert_cli_refuses_unsafe_pickle_and_reports(small_model, tmp_path, capsys, load_tool):
    """tools/convert_weights.py: one line of error (exit 2) for an unsafe pickle; inspect prints metadata."""
    cli = load_tool("convert_weights")
    path = tmp_path / "evil.pth"
    torch.save({"model": small_model.state_dict(), "x": Payload()}, path)
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--allow-unsafe-pickle" in err and err.count("\n") == 1
    good = save_weights(small_model.state_dict(), tmp_path / "m.safetensors", model=small_model, source="cli")
    assert cli.main(["inspect", str(good)]) == 0
    assert "source: cli" in capsys.readouterr().out


def test_gitignore_covers_weight_files():
    text = (ROOT / ".gitignore").read_text()
    for pattern in ("weights/*.pth", "weights/*.pkl", "weights/*.safetensors"):
        assert pattern in text
    manifest = json.loads((ROOT / "weights" / "manifest.json").read_text())
    names = {w["name"] for w in manifest["weights"]}
    assert {"nasnet_a_mobile_tf", "nasnet_a_large_tf", "nasnetalarge_timm", "pnasnet5large_timm"} <= names
    for w in manifest["weights"]:
        assert {"name", "source", "url", "expected_file", "convert"} <= set(w), w["name"]
