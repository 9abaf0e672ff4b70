"""Classifier export (TorchScript, ONNX) runs in every runtime with the eager model's outputs and its provenance."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

import nasnet_det
from nasnet_det.deploy import build_provenance, export_classifier, load_exported, read_provenance
from nasnet_det.errors import DeployError

SIZE = 64

#: ONNX needs the deploy extra (upstream-main test venvs may lack it; TorchScript is checked there too)
FORMATS = ("torchscript", "onnx") if importlib.util.find_spec("onnx") else ("torchscript",)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = nasnet_det.create_model("nasnet_a_mobile", num_classes=7, num_cells=3, num_conv_filters=8,
                                    use_aux_head=False).eval()
    for m in model.modules():  # non-trivial BN statistics, so a dropped or misplaced BN shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def exports(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    prov = build_provenance(small_model, "classifier", "model: {arch: nasnet_a_mobile}\n", None,
                            {"images": [None, 3, SIZE, SIZE]})
    return {fmt: export_classifier(small_model, fmt, out / "net", SIZE, prov) for fmt in FORMATS}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_runtime_matches_eager_at_another_batch(small_model, exports, runtime):
    if runtime != "torch":
        pytest.importorskip(runtime, reason="the deploy extra is not installed")
        pytest.importorskip("onnx", reason="the deploy extra is not installed")
    path = exports["torchscript" if runtime == "torch" else "onnx"]
    images = torch.randn(3, 3, SIZE, SIZE)  # traced at batch 2: the batch is dynamic
    with torch.no_grad():
        want = small_model(images).numpy()
    (got,) = load_exported(path, runtime, threads=1)(images.numpy())
    assert got.shape == (3, 7)
    assert _relative(got, want) < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


def test_provenance_recorded_in_both_formats(small_model, exports):
    for path in exports.values():
        prov = read_provenance(path)
        assert prov["kind"] == "classifier"
        assert json.loads(prov["genotype"]) == small_model.config.genotype.to_dict()
        assert "random initialisation" in prov["source_weights"]
        assert json.loads(prov["nasnet_config"])["num_cells"] == 3


def test_runtime_errors(exports, tmp_path):
    with pytest.raises(DeployError, match="expected one of"):
        load_exported(exports["onnx"], "tensorrt")
    with pytest.raises(DeployError, match="runs .onnx files"):
        load_exported(exports["torchscript"], "onnxruntime")
    with pytest.raises(DeployError, match="does not exist"):
        load_exported(tmp_path / "missing.onnx", "openvino")
    with pytest.raises(DeployError, match="format"):
        export_classifier(torch.nn.Identity(), "tflite", tmp_path / "x", SIZE, {})


def _runtime_and_file(exports, runtime):
    if runtime != "torch":
        pytest.importorskip(runtime, reason="the deploy extra is not installed")
        pytest.importorskip("onnx", reason="the deploy extra is not installed")
    return exports["torchscript" if runtime == "torch" else "onnx"]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_an_input_the_file_was_not_exported_for_is_one_error(exports, runtime):
    """A TorchScript trace would run on 65x65 and give other numbers; the runtimes raise long errors."""
    run = load_exported(_runtime_and_file(exports, runtime), runtime, threads=1)
    with pytest.raises(DeployError, match=rf"shape \(1, 3, 65, 65\), the file takes \(any, 3, {SIZE}, {SIZE}\)"):
        run(np.zeros((1, 3, SIZE + 1, SIZE + 1), np.float32))
    with pytest.raises(DeployError, match="must be float32, got float64"):
        run(np.zeros((1, 3, SIZE, SIZE)))
    with pytest.raises(DeployError, match="takes 1 input"):
        run()


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_a_damaged_export_is_one_error(exports, runtime, tmp_path):
    path = _runtime_and_file(exports, runtime)
    damaged = tmp_path / path.name
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DeployError, match="cannot be loaded .*export it again"):
        load_exported(damaged, runtime)
    with pytest.raises(DeployError, match="not an? (ONNX|TorchScript) file"):
        read_provenance(damaged)


def test_a_torchscript_file_without_provenance_still_runs(small_model, tmp_path):
    """Its inputs are not declared, so they are left to TorchScript (not refused as 0 inputs)."""
    path = tmp_path / "plain.pt"
    with torch.no_grad():
        torch.jit.trace(small_model, torch.randn(1, 3, SIZE, SIZE), check_trace=False).save(str(path))
    (got,) = load_exported(path, "torch", threads=1)(np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert got.shape == (2, 7)
