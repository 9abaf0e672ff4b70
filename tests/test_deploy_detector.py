"""Detector export (TracingAdapter): the same boxes, scores and classes as the eager detector, in every runtime."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from nasnet_det.deploy import build_provenance, load_exported, read_provenance
from nasnet_det.deploy.detector import export_detector

HW = (288, 288)  # the demo config's INPUT.FIXED_SIZE_TEST (NASNetRCNN resizes other shapes itself)

#: ONNX needs the deploy extra (upstream-main test venvs may lack it; TorchScript is checked there too)
FORMATS = ("torchscript", "onnx") if importlib.util.find_spec("onnx") else ("torchscript",)


@pytest.fixture(scope="module")
def detector():
    from detectron2.modeling import build_model

    import nasnet_det.detection  # noqa: F401  (registers the backbone)
    from nasnet_det.detection.config import load_config

    cfg = load_config("configs/nasnet_demo_synthetic.yaml", ["MODEL.DEVICE", "cpu",
                                                             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


@pytest.fixture(scope="module")
def exports(detector, tmp_path_factory):
    cfg, model = detector
    out = tmp_path_factory.mktemp("det")
    prov = build_provenance(model, "detector", cfg.dump(), None, {"image": [3, *HW]})
    return {fmt: export_detector(model, fmt, out / "det", HW, prov) for fmt in FORMATS}


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_exported_detector_matches_eager(detector, exports, runtime):
    if runtime != "torch":
        pytest.importorskip(runtime, reason="the deploy extra is not installed")
        pytest.importorskip("onnx", reason="the deploy extra is not installed")
    _, model = detector
    image = torch.rand(3, *HW, generator=torch.Generator().manual_seed(1)) * 255  # not the traced image
    with torch.no_grad():
        inst = model.inference([{"image": image}], do_postprocess=False)[0]
    assert len(inst) > 0, "the check needs detections"
    path = exports["torchscript" if runtime == "torch" else "onnx"]
    boxes, scores, classes = load_exported(path, runtime, threads=1)(image.numpy())
    assert boxes.shape == (len(inst), 4)
    np.testing.assert_allclose(boxes, inst.pred_boxes.tensor.numpy(), atol=0.5)
    np.testing.assert_allclose(scores, inst.scores.numpy(), atol=1e-3)
    assert (classes == inst.pred_classes.numpy()).all()


def test_detector_provenance(exports):
    for path in exports.values():
        prov = read_provenance(path)
        assert prov["kind"] == "detector" and "genotype" in prov and "NASNET" in prov["config"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_predictor_runtime_matches_torch(detector, runtime):
    pytest.importorskip(runtime, reason="the deploy extra is not installed")
    pytest.importorskip("onnx", reason="the deploy extra is not installed")
    from nasnet_det.detection.predictor import NASNetPredictor

    cfg, _ = detector
    image = np.random.default_rng(0).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    found = {}
    for name in ("torch", runtime):
        torch.manual_seed(0)  # the same random weights in both predictors
        found[name] = NASNetPredictor(cfg, runtime=name)(image)
    _assert_same_detections(found[runtime], found["torch"])


def _assert_same_detections(got, want) -> None:
    assert len(want) > 0 and len(got) == len(want)
    np.testing.assert_allclose(got.pred_boxes.tensor.numpy(), want.pred_boxes.tensor.numpy(), atol=0.5)
    np.testing.assert_allclose(got.scores.numpy(), want.scores.numpy(), atol=1e-3)
    assert (got.pred_classes == want.pred_classes).all()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_predictor_runtime_matches_torch_on_real_coco_images(detector, runtime, shared_data):
    """Issue 13's check on real photographs (coco_mini val2017, their own sizes and aspect ratios):
    boxes within 0.5 px, scores within 1e-3, the same classes, after the same thresholds."""
    pytest.importorskip(runtime, reason="the deploy extra is not installed")
    pytest.importorskip("onnx", reason="the deploy extra is not installed")
    from detectron2.data.detection_utils import read_image

    from nasnet_det.detection.predictor import NASNetPredictor

    files = sorted((shared_data / "coco_mini" / "val2017").glob("*.jpg"))[:3]
    if not files:
        pytest.skip(f"no images in {shared_data / 'coco_mini' / 'val2017'}")
    cfg, _ = detector
    predictors = {}
    for name in ("torch", runtime):
        torch.manual_seed(0)  # the same random weights in both predictors
        predictors[name] = NASNetPredictor(cfg, runtime=name)
    for path in files:
        image = read_image(str(path), format="BGR")
        _assert_same_detections(predictors[runtime](image), predictors["torch"](image))


def test_predictor_runtime_needs_fixed_size(detector):
    from nasnet_det.detection.predictor import NASNetPredictor
    from nasnet_det.errors import ConfigError

    cfg, _ = detector
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.FIXED_SIZE_TEST = (0, 0)
    with pytest.raises(ConfigError, match="FIXED_SIZE_TEST"):
        NASNetPredictor(cfg, runtime="openvino")
    with pytest.raises(ConfigError, match="expected torch"):
        NASNetPredictor(cfg, runtime="tvm")


def test_torchscript_detector_loads_in_a_fresh_process(exports):
    """The trace calls torchvision::nms, registered by importing torchvision: the loader does that."""
    code = ("import numpy as np; from nasnet_det.deploy import load_exported; "
            f"run = load_exported({str(exports['torchscript'])!r}, 'torch', threads=1); "
            f"print(len(run(np.zeros((3, {HW[0]}, {HW[1]}), np.float32))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr


@pytest.mark.parametrize("fmt,runtime", [("torchscript", None), ("onnx", None), ("onnx", "openvino")])
def test_predictor_from_an_exported_file_matches_torch(detector, exports, fmt, runtime):
    """``NASNetPredictor.from_exported``: no model built, the config comes from the file's provenance,
    and the detections are the eager model's (an image of another size: the export's resize runs)."""
    if fmt == "onnx":
        pytest.importorskip(runtime or "onnxruntime", reason="the deploy extra is not installed")
        pytest.importorskip("onnx", reason="the deploy extra is not installed")
    from nasnet_det.detection.predictor import NASNetPredictor

    cfg, _ = detector
    torch.manual_seed(0)  # the weights of the `detector` fixture, which the files were exported from
    eager = NASNetPredictor(cfg)
    exported = NASNetPredictor.from_exported(exports[fmt], runtime)
    assert yaml.safe_load(exported.cfg.dump()) == yaml.safe_load(cfg.dump())
    image = (np.random.default_rng(2).random((200, 300, 3)) * 255).astype(np.uint8)
    want = eager(image)
    _assert_same_detections(exported(image), want)
    middle = float(want.scores.median())
    strong = NASNetPredictor.from_exported(exports[fmt], runtime, min_score=middle)(image)
    assert 0 < len(strong) < len(want) and bool((strong.scores >= middle).all())
    with pytest.warns(UserWarning, match="brings no weaker ones back"):
        NASNetPredictor.from_exported(exports[fmt], runtime, min_score=0.01)


def test_demo_runs_an_exported_file(exports, tmp_path, load_tool, capsys):
    """``tools/demo.py --exported FILE``: no --config-file, and the flags that would change the file are refused."""
    import cv2

    demo = load_tool("demo")
    photo = tmp_path / "in.jpg"
    cv2.imwrite(str(photo), (np.random.default_rng(2).random((200, 300, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert demo.main(["--exported", str(exports["torchscript"]), "--input", str(photo), "--output", str(out),
                      "--confidence-threshold", "0.05", "--no-progress"]) == 0
    assert (out / "results.json").is_file() and (out / "in.jpg").is_file()
    assert demo.main(["--exported", str(exports["torchscript"]), "--input", str(photo), "--output", str(out),
                      "--weights", "w.pth"]) == 2
    assert "drop --weights" in capsys.readouterr().err
