"""tools/demo.py, VisualizationDemo and NASNetPredictor with a randomly initialised small detector
(no weights needed).

Checks the plumbing a user relies on: every input form (files, folders, globs, videos), annotated
outputs, a results.json that pycocotools accepts with the dataset's own category and image ids,
the config's test-time resize, and one clear error for a bad input file. The command line runs
as a subprocess, as a user runs it; the rest calls the package directly.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("detectron2")

import nasnet_det.detection  # noqa: E402,F401  (registers the plugin; compat first)
from nasnet_det.data import synthetic as syn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "demo.py"
CONFIG = str(ROOT / "configs" / "nasnet_demo_synthetic.yaml")
SIZE = 96
# a fast model: the demo config at 96x96 input
OPTS = ["INPUT.FIXED_SIZE_TEST", f"({SIZE}, {SIZE})", "MODEL.RPN.POST_NMS_TOPK_TEST", "20"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    spec = syn.SyntheticSpec(image_size=SIZE, min_radius=8, max_radius=20)
    return syn.make_dataset(root, num_train=1, num_val=4, seed=5, spec=spec)


def _run(args, random_weights: bool = True) -> subprocess.CompletedProcess:
    """tools/demo.py as a user runs it (on a random model unless told otherwise)."""
    flags = ["--allow-random-weights"] if random_weights else []
    return subprocess.run([sys.executable, str(TOOL), "--config-file", CONFIG, "--device", "cpu", "--no-progress",
                           *flags, *args, *OPTS], capture_output=True, text=True, timeout=600)


def test_no_weights_is_refused_unless_asked(dataset, tmp_path):
    result = _run(["--input", str(dataset.val_images / "000000.jpg"), "--output", str(tmp_path / "out")],
                  random_weights=False)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and "--allow-random-weights" in errors[0], result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_class_names_come_from_the_configs_test_set(dataset, tmp_path):
    """No --dataset-json: the config's DATASETS.TEST (here recorded in DATASETS.COCO_JSON, as a
    saved train_net config.yaml records it) gives the names and the dataset's category ids."""
    entry = f"[['shapes_val', '{dataset.val_json}', '{dataset.val_images}']]"
    result = _run(["--input", str(dataset.val_images / "000000.jpg"), "--output", str(tmp_path / "out"),
                   "--confidence-threshold", "0.0", "DATASETS.TEST", "('shapes_val',)", "DATASETS.COCO_JSON", entry])
    assert result.returncode == 0, result.stderr
    assert "class_<k>" not in result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 2, 4, 7, 9}  # the json's sparse ids


def _demo(fast: bool = False):
    """A VisualizationDemo without a dataset: generic class names, contiguous ids."""
    from nasnet_det.detection.predictor import NASNetPredictor
    from nasnet_det.detection.visualization import VisualizationDemo, load_class_info, load_demo_config

    cfg = load_demo_config(CONFIG, OPTS, "cpu", 0.0)
    info = load_class_info(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return VisualizationDemo(NASNetPredictor(cfg, optimize=fast), info)


def test_images_folder_and_results_json(dataset, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    result = _run(["--input", str(dataset.val_images), "--output", str(out), "--dataset-json",
                   str(dataset.val_json), "--confidence-threshold", "0.0"])
    assert result.returncode == 0, result.stderr
    assert f"pictures in {out}/" in result.stdout
    pictures = sorted(out.glob("*.jpg"))
    assert [p.name for p in pictures] == [f"{i:06d}.jpg" for i in range(4)]
    drawn = cv2.imread(str(pictures[0]))
    assert drawn is not None and drawn.shape[0] >= SIZE  # small images are drawn enlarged
    results = json.loads((out / "results.json").read_text())
    assert results, "a random model at threshold 0 still proposes boxes"
    gt = COCO(str(dataset.val_json))
    dt = gt.loadRes(str(out / "results.json"))  # pycocotools accepts it against the dataset json
    assert set(dt.getImgIds()) <= set(gt.getImgIds())
    assert {r["category_id"] for r in results} <= {1, 2, 4, 7, 9}  # dataset ids, not contiguous ones
    names = {im["id"]: im["file_name"] for im in gt.dataset["images"]}
    for r in results:
        assert names[r["image_id"]] == r["file_name"]  # image ids are the json's own
        x, y, w, h = r["bbox"]
        assert w >= 0 and h >= 0 and -1 <= x <= SIZE and -1 <= y <= SIZE
        assert 0.0 <= r["score"] <= 1.0
    index = json.loads((out / "images.json").read_text())
    assert len(index["images"]) == 4 and [c["name"] for c in index["categories"]][:2] == ["circle", "square"]


def test_globs_videos_and_unknown_dataset(dataset, tmp_path):
    from nasnet_det.detection.visualization import expand_inputs

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (SIZE, SIZE))
    assert writer.isOpened()
    for i in range(3):
        writer.write(cv2.imread(str(dataset.val_images / f"{i:06d}.jpg")))
    writer.release()
    out = tmp_path / "out"
    pattern = str(dataset.val_images / "00000[01].jpg")
    summary = _demo(fast=True).annotate(expand_inputs([pattern, str(video)]), out, progress=False)
    assert summary["num_images"] == 5
    index = json.loads((out / "images.json").read_text())["images"]
    assert [im["file_name"] for im in index] == ["000000.jpg", "000001.jpg", "clip.avi", "clip.avi", "clip.avi"]
    assert [im.get("frame") for im in index[2:]] == [0, 1, 2]
    assert len({im["id"] for im in index}) == 5
    annotated = [p for p in out.iterdir() if p.stem == "clip_annotated"]
    assert annotated, "an annotated video is written"
    cap = cv2.VideoCapture(str(annotated[0]))
    assert cap.isOpened() and cap.read()[0]
    cap.release()
    results = json.loads((out / "results.json").read_text())
    # without a dataset the classes are generic and ids are the contiguous indices
    assert {r["category_id"] for r in results} <= set(range(5))


@pytest.mark.parametrize("bad", ["missing", "empty_glob", "empty_folder"])
def test_an_input_that_names_nothing_is_named(tmp_path, bad):
    from nasnet_det.detection.visualization import InputError, expand_inputs

    target = {"missing": tmp_path / "nowhere.jpg", "empty_glob": tmp_path / "*.png", "empty_folder": tmp_path}[bad]
    with pytest.raises(InputError, match="input (file|pattern|folder)") as err:
        expand_inputs([str(target)])
    assert str(target) in str(err.value)


def test_bad_input_gives_one_clear_error(dataset, tmp_path):
    target = tmp_path / "broken.jpg"
    target.write_bytes((dataset.val_images / "000000.jpg").read_bytes()[:200])  # truncated JPEG
    result = _run(["--input", str(dataset.val_images / "000000.jpg"), str(target), "--output", str(tmp_path / "out")])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("demo.py: error")]
    assert len(lines) == 1 and str(target) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "results.json").exists()  # a failed run writes no results


@pytest.mark.parametrize("flag", ["--weights", "--dataset-json"])
def test_missing_weights_or_dataset_json_is_named(dataset, tmp_path, flag):
    missing = str(tmp_path / ("nope.pth" if flag == "--weights" else "nope.json"))
    result = _run(["--input", str(dataset.val_images / "000000.jpg"), "--output", str(tmp_path / "out"), flag, missing])
    assert result.returncode == 2 and missing in result.stderr and "Traceback" not in result.stderr


def test_predictor_uses_the_configs_test_resize(dataset):
    from detectron2.data import transforms as T

    from nasnet_det.detection import load_config
    from nasnet_det.detection.predictor import ClassInfo, NASNetPredictor, instances_to_coco_results

    cfg = load_config(CONFIG, OPTS + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    predictor = NASNetPredictor(cfg)
    assert [type(a) for a in predictor.augmentations] == [T.Resize]  # the fixed size, not shortest edge
    seen = []
    original = predictor.model.forward
    predictor.model.forward = lambda inputs: seen.append(inputs[0]) or original(inputs)
    image = np.random.default_rng(0).integers(0, 255, (70, 130, 3), dtype=np.uint8)
    instances = predictor(image)
    assert tuple(seen[0]["image"].shape) == (3, SIZE, SIZE)  # resized to INPUT.FIXED_SIZE_TEST
    assert (seen[0]["height"], seen[0]["width"]) == (70, 130)
    boxes = instances.pred_boxes.tensor
    assert len(boxes) and instances.image_size == (70, 130)  # boxes in original coordinates
    assert float(boxes[:, 2].max()) <= 130 + 1e-3 and float(boxes[:, 3].max()) <= 70 + 1e-3
    # the same picture given as RGB is converted to the model's format: identical detections
    again = predictor(np.ascontiguousarray(image[:, :, ::-1]), image_format="RGB")
    assert np.allclose(again.pred_boxes.tensor.numpy(), boxes.numpy())

    shortest = load_config(CONFIG, ["INPUT.FIXED_SIZE_TEST", "(0, 0)", "INPUT.MIN_SIZE_TEST", "64"])
    assert [type(a) for a in NASNetPredictor(shortest).augmentations] == [T.ResizeShortestEdge]

    info = ClassInfo.from_coco_json(str(dataset.val_json))
    assert info.names == ("circle", "square", "triangle", "star", "cross") and info.dataset_ids == (1, 2, 4, 7, 9)
    res = instances_to_coco_results(instances[:2], 42, info, file_name="x.jpg")
    assert all(r["image_id"] == 42 and r["category_id"] in info.dataset_ids and r["file_name"] == "x.jpg" for r in res)


def test_fast_predictor_gives_the_same_detections(dataset):
    """``optimize=True`` (tools/demo.py --fast): BN folded + channels_last, same detections up to fp32 rounding."""
    import torch

    from nasnet_det.detection import load_config
    from nasnet_det.detection.predictor import NASNetPredictor
    from nasnet_det.modeling import NASNet

    cfg = load_config(CONFIG, OPTS + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    plain = NASNetPredictor(cfg)
    torch.manual_seed(0)
    fast = NASNetPredictor(cfg, optimize=True)
    assert any(isinstance(m, NASNet) and m.channels_last_input for m in fast.model.modules())
    assert not any(isinstance(m, NASNet) and m.channels_last_input for m in plain.model.modules())
    image = cv2.imread(str(next(iter(sorted(dataset.val_images.glob("*.jpg"))))))
    a, b = plain(image), fast(image)
    assert len(a) and len(a) == len(b)
    # near-tied scores of an untrained head may swap places: compare the best detection and the score lists
    assert torch.allclose(a.scores.sort().values, b.scores.sort().values, rtol=1e-3, atol=1e-5)
    best_a, best_b = int(a.scores.argmax()), int(b.scores.argmax())
    assert torch.allclose(a.pred_boxes.tensor[best_a], b.pred_boxes.tensor[best_b], atol=1e-2)


def test_class_count_mismatch_names_where_the_names_came_from():
    """The own-data config's DATASETS.TEST is COCO's: the demo must say the 80 came from there."""
    from nasnet_det.detection.visualization import InputError, load_class_info

    with pytest.raises(InputError, match=r"dataset 'coco_2017_val' \(the config's DATASETS\.TEST\[0\]; pass "
                                         r"--dataset-json .*\) has 80 classes, but the model has "
                                         r"MODEL\.ROI_HEADS\.NUM_CLASSES = 3"):
        load_class_info(3, dataset="coco_2017_val", from_config=True)
