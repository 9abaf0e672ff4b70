"""Classifier -> detectron2 export: the detector loads it with no missing backbone / ROI-head cell
tensors, and its first-stage features equal the classifier's for the same image."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2")

import nasnet_det.detection  # noqa: E402  (registers the detectron2 plugin)
from nasnet_det.weights import WeightsError, save_weights  # noqa: E402
from nasnet_det.weights.export import DETECTOR_ONLY_PREFIXES, export_to_detectron2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO_VAL = ROOT.parent / "shared" / "data" / "coco_mini" / "val2017"
# A small NASNet-A ("1 @ 96": 3 normal cells, 4 filters) keeps the test fast; the mapping is size-independent.
OPTS = ["MODEL.NASNET.NUM_CELLS", "3", "MODEL.NASNET.PENULTIMATE_FILTERS", "96", "MODEL.DEVICE", "cpu",
        "MODEL.ROI_HEADS.NUM_CLASSES", "3"]


def _cfg():
    from nasnet_det.detection.config import load_config

    return load_config(str(ROOT / "configs" / "nasnet_a_mobile_frcnn.yaml"), OPTS, freeze=False)


def _classifier():
    torch.manual_seed(0)
    net = nasnet_det.build_nasnet("nasnet_a", dataset="imagenet", num_cells=3, penultimate_filters=96,
                                  num_classes=10, image_size=96)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # non-trivial BN so that a mis-mapped BN changes the features
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return net.eval()


def _image() -> torch.Tensor:
    """A real COCO image (0..255, CHW, RGB) when ../shared/data is present, else a synthetic one."""
    if COCO_VAL.is_dir():
        from PIL import Image
        from torchvision import transforms as T

        img = Image.open(COCO_VAL / sorted(os.listdir(COCO_VAL))[0]).convert("RGB")
        return (T.PILToTensor()(T.Resize((128, 160))(img))).float()
    return torch.randint(0, 256, (3, 128, 160)).float()


def test_export_loads_into_detector_and_features_match(tmp_path):
    from detectron2.modeling import build_model

    from nasnet_det.detection import build_checkpointer

    cfg = _cfg()
    clf = _classifier()
    # The exporter takes any of our weights files: go through the safetensors format too.
    src = save_weights(clf.state_dict(), tmp_path / "clf.safetensors", model=clf, source="test")
    from nasnet_det.weights import load_state_dict

    state, _ = load_state_dict(src)
    out = tmp_path / "d2.pkl"
    report = export_to_detectron2(state, cfg, out)
    assert any(k.startswith("classifier.") for k in report.dropped)
    assert any(k.startswith("aux_head.") for k in report.dropped)
    assert all(k.startswith(DETECTOR_ONLY_PREFIXES) for k in report.detector_only)

    with open(out, "rb") as f:
        payload = pickle.load(f)
    assert payload["matching_heuristics"] is False and "__author__" in payload

    detector = build_model(cfg).eval()
    own = detector.state_dict()
    missing = [k for k in own if k not in payload["model"] and not k.startswith(DETECTOR_ONLY_PREFIXES)
               and not k.endswith("num_batches_tracked")]  # detectron2 main's FrozenBN counter
    assert missing == [], f"backbone / ROI-head tensors without a value: {missing[:5]}"
    assert any(k.startswith("backbone.nasnet.conv0.") for k in payload["model"]), "the stem must be exported"
    assert any(k.startswith("roi_heads.res5.nasnet.cells.") for k in payload["model"])

    build_checkpointer(detector).load(str(out))  # the trainer's loader, as MODEL.WEIGHTS does
    loaded = detector.state_dict()
    for key, value in payload["model"].items():
        assert torch.equal(loaded[key].cpu(), torch.as_tensor(value)), key
    # our classifier .safetensors given directly as MODEL.WEIGHTS loads the same tensors
    direct = build_model(cfg).eval()
    build_checkpointer(direct, cfg=cfg).load(str(src))
    for key, value in payload["model"].items():
        assert torch.equal(direct.state_dict()[key].cpu(), torch.as_tensor(value)), key

    image = _image()
    with torch.no_grad():
        batched = detector.preprocess_image([{"image": image}])
        features = detector.backbone(batched.tensor)[cfg.MODEL.NASNET.OUT_FEATURE]
        x = ((image - 127.5) / 127.5)[None]  # the classifier's [-1, 1] input
        h_prev, h = clf.stem(x)
        split = detector.backbone.split_at
        h_prev, h = clf.forward_cells(h_prev, h, 0, split)
        expected = torch.cat([h_prev, h], 1)
    assert features.shape == expected.shape
    rel = ((features - expected).abs().max() / expected.abs().max()).item()
    assert rel < 1e-4, f"first-stage features differ from the classifier's (rel {rel:.2e})"


def test_export_of_a_different_architecture_is_one_clear_error(tmp_path):
    cfg = _cfg()
    other = nasnet_det.build_nasnet("nasnet_a", dataset="imagenet", num_cells=6, penultimate_filters=96, num_classes=10)
    with pytest.raises(WeightsError, match="do not fit the detector"):
        export_to_detectron2(other.state_dict(), cfg, tmp_path / "x.pkl")
