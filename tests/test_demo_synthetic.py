"""The synthetic shapes dataset behind ``make demo``: deterministic, tight boxes, valid COCO json.

Needs only numpy, OpenCV and pycocotools (the generator does not import torch or detectron2).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasnet_det.data import synthetic as syn

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic_dataset.py"


def test_render_is_deterministic_by_seed():
    a_img, a_objs = syn.render_sample(np.random.default_rng([3, 0, 7]))
    b_img, b_objs = syn.render_sample(np.random.default_rng([3, 0, 7]))
    c_img, _ = syn.render_sample(np.random.default_rng([4, 0, 7]))
    assert np.array_equal(a_img, b_img)
    assert [(o.category_id, o.bbox) for o in a_objs] == [(o.category_id, o.bbox) for o in b_objs]
    assert not np.array_equal(a_img, c_img)


@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_tight_around_the_drawn_pixels(seed):
    spec = syn.SyntheticSpec(noise_std=(0.0, 0.0))  # without noise each object is one flat colour
    img, objects = syn.render_sample(np.random.default_rng(seed), spec)
    assert img.shape == (spec.image_size, spec.image_size, 3) and img.dtype == np.uint8
    assert spec.min_objects <= len(objects) <= spec.max_objects
    valid_ids = {s.id for s in syn.SHAPES}
    for obj in objects:
        x, y, w, h = obj.bbox
        assert obj.category_id in valid_ids
        assert 0 <= x and 0 <= y and x + w <= spec.image_size and y + h <= spec.image_size
        ys, xs = np.nonzero(obj.mask)
        assert (xs.min(), ys.min(), xs.max() + 1 - x, ys.max() + 1 - y) == (x, y, w, h)
        assert obj.area == int(obj.mask.sum()) > 0
        assert w >= spec.min_radius and h >= spec.min_radius  # not degenerate slivers
        # the box holds painted pixels: the object's colour dominates it (the fill is one colour)
        inside = img[obj.mask > 0].reshape(-1, 3)
        colours, counts = np.unique(inside, axis=0, return_counts=True)
        assert counts.max() >= 0.5 * len(inside)
    # boxes do not overlap (occlusion-free by construction)
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            ax, ay, aw, ah = a.bbox
            bx, by, bw, bh = b.bbox
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay


def test_written_split_is_valid_coco_and_matches_the_renderer(tmp_path):
    from pycocotools.coco import COCO

    spec = syn.SyntheticSpec(image_size=96, min_radius=8, max_radius=20)
    json_path = syn.write_split(tmp_path, "val", 5, seed=11, spec=spec)
    coco = COCO(str(json_path))
    assert sorted(coco.getCatIds()) == [s.id for s in syn.SHAPES] == [1, 2, 4, 7, 9]  # sparse on purpose
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5]
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert (tmp_path / "val" / info["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert anns, "every image holds at least one object"
        _, objects = syn.render_sample(syn._split_rng(11, "val", image_id - 1), spec)
        assert [(a["category_id"], tuple(a["bbox"])) for a in anns] == [(o.category_id, o.bbox) for o in objects]
        for a in anns:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= info["width"] and y + h <= info["height"]
            assert a["iscrowd"] == 0 and a["area"] > 0
    # same seed -> the same file, byte for byte
    first = json_path.read_bytes()
    image_bytes = (tmp_path / "val" / "000000.jpg").read_bytes()
    syn.write_split(tmp_path, "val", 5, seed=11, spec=spec)
    assert json_path.read_bytes() == first
    assert (tmp_path / "val" / "000000.jpg").read_bytes() == image_bytes


def test_make_dataset_reuses_and_regenerates(tmp_path):
    spec = syn.SyntheticSpec(image_size=64, min_radius=6, max_radius=14, max_objects=2)
    ds = syn.make_dataset(tmp_path, num_train=4, num_val=2, seed=1, spec=spec)
    assert not ds.reused
    train = json.loads(ds.train_json.read_text())
    val = json.loads(ds.val_json.read_text())
    assert len(train["images"]) == 4 and len(val["images"]) == 2
    assert train["images"][0]["file_name"] != "" and (ds.train_images / train["images"][0]["file_name"]).is_file()
    # train and val are different images (held out), drawn from different generators
    assert (ds.train_images / "000000.jpg").read_bytes() != (ds.val_images / "000000.jpg").read_bytes()
    mtime = ds.train_json.stat().st_mtime_ns
    again = syn.make_dataset(tmp_path, num_train=4, num_val=2, seed=1, spec=spec)
    assert again.reused and ds.train_json.stat().st_mtime_ns == mtime
    (ds.val_images / "000001.jpg").unlink()  # an incomplete dataset is written again
    assert not syn.make_dataset(tmp_path, num_train=4, num_val=2, seed=1, spec=spec).reused
    assert not syn.make_dataset(tmp_path, num_train=4, num_val=2, seed=2, spec=spec).reused


def test_spec_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="max_radius"):
        syn.SyntheticSpec(image_size=64, max_radius=40)
    with pytest.raises(ValueError, match="min_objects"):
        syn.SyntheticSpec(min_objects=3, max_objects=2)


def test_make_synthetic_dataset_cli(tmp_path):
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=300)

    argv = ["--output", str(tmp_path), "--num-train", "3", "--num-val", "2", "--image-size", "80",
            "--min-radius", "8", "--max-radius", "16"]
    first = run(*argv)
    assert first.returncode == 0, first.stderr
    assert "wrote 3 train + 2 val" in first.stdout
    assert (tmp_path / "annotations" / "train.json").is_file() and (tmp_path / "val" / "000001.jpg").is_file()
    again = run(*argv)
    assert again.returncode == 0 and "reused" in again.stdout
    bad = run("--output", str(tmp_path), "--image-size", "40")
    assert bad.returncode != 0 and "make_synthetic_dataset.py: error:" in bad.stderr and "max_radius" in bad.stderr
