"""detectron2's own ``DefaultPredictor(cfg)`` with our configs gives the boxes ``NASNetPredictor`` (and
evaluation) give: the config's fixed test size is applied by the NASNetRCNN model, so the shortest-edge
resize of DefaultPredictor must be off (INPUT.MIN_SIZE_TEST 0) and a config that says otherwise fails.
"""
from __future__ import annotations

import cv2
import pytest
import torch

pytest.importorskip("detectron2")

import nasnet_det.detection  # noqa: E402,F401  (registers the plugin; compat first)
from nasnet_det.detection import ConfigError, NASNetPredictor, load_config  # noqa: E402
from tests.test_detection_common import COCO_MINI, requires_coco_mini  # noqa: E402

SIZE = 96
# a small, fast network on the demo config's plumbing: only the resize matters here
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.NASNET.NUM_CELLS", "3", "MODEL.NASNET.PENULTIMATE_FILTERS", "240",
        "INPUT.FIXED_SIZE_TEST", f"({SIZE}, {SIZE})", "MODEL.RPN.POST_NMS_TOPK_TEST", "10",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def _image():
    files = sorted((COCO_MINI / "val2017").glob("*.jpg"))
    for f in files:  # a non-square image: where a shortest-edge and a fixed resize differ
        image = cv2.imread(str(f))
        if image is not None and image.shape[0] != image.shape[1]:
            return image
    pytest.skip("no non-square image in coco_mini/val2017")


@requires_coco_mini
@pytest.mark.parametrize("config", ["nasnet_a_mobile_frcnn.yaml", "nasnet_a_large_frcnn_lowproposals.yaml"])
def test_default_predictor_matches_nasnet_predictor(config):
    from detectron2.engine import DefaultPredictor

    cfg = load_config(f"configs/{config}", OPTS + ["MODEL.NASNET.ARCH", "nasnet_a_mobile"])
    torch.manual_seed(0)
    ours = NASNetPredictor(cfg)
    theirs = DefaultPredictor(cfg)
    theirs.model.load_state_dict(ours.model.state_dict())
    image = _image()  # BGR, as both predictors expect by default
    a, b = ours(image), theirs(image)["instances"].to("cpu")
    assert len(a) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)
    h, w = image.shape[:2]
    assert float(a.pred_boxes.tensor[:, 2].max()) <= w and float(a.pred_boxes.tensor[:, 3].max()) <= h


@pytest.mark.parametrize("opts, words", [
    (["INPUT.MIN_SIZE_TEST", "800"], ["INPUT.MIN_SIZE_TEST = 800", "command-line override", "must be 0"]),
    (["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"], ["MODEL.META_ARCHITECTURE = 'GeneralizedRCNN'", "NASNetRCNN"]),
])
def test_config_whose_two_resizes_disagree_is_refused(opts, words):
    with pytest.raises(ConfigError) as info:
        load_config("configs/nasnet_a_mobile_frcnn.yaml", opts)
    for word in words:
        assert word in str(info.value)
