"""The COCO-json checker run at registration (nasnet_det/detection/dataset_check.py).

Each bad item is a small edit of one tiny valid dataset (two PNGs of 32x24, written with cv2).
Invalid annotations must be dropped with one warning naming file, annotation id and field, or
refused under strict mode; structural problems must raise one DatasetError naming them.
"""
from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import nasnet_det.detection  # noqa: F401, I001  (registers the plugin; compat first)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from nasnet_det.detection.config import load_config
from nasnet_det.detection.datasets import DatasetError, check_datasets, check_num_classes, register_coco_json
from nasnet_det.errors import ConfigError, NASNetError

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "nasnet_demo_synthetic.yaml")
W, H = 32, 24

VALID: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": W, "height": H},
        {"id": 2, "file_name": "b.png", "width": W, "height": H},
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [15, 5, 12, 12], "area": 144, "iscrowd": 0},
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
}


@pytest.fixture
def dataset(tmp_path) -> Callable[..., tuple[Path, Path]]:
    """A function writing the valid dataset, edited by ``edit(data)``, and returning (json, images)."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.full((H, W, 3), 127, np.uint8))

    def write(edit: Callable[[dict], Any] | None = None, text: bytes | None = None) -> tuple[Path, Path]:
        path = tmp_path / "instances.json"
        data = copy.deepcopy(VALID)
        if edit:
            edit(data)
        path.write_bytes(text if text is not None else json.dumps(data).encode())
        return path, images

    return write


def _ann(data: dict, ann_id: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def test_valid_dataset_registers_as_is(dataset):
    json_file, images = dataset()
    name = register_coco_json("nasnet_test_valid", str(json_file), str(images))
    meta = MetadataCatalog.get(name)
    assert meta.json_file == str(json_file)  # nothing dropped: no cleaned copy
    assert meta.thing_classes == ["cat", "dog"]
    records = DatasetCatalog.get(name)
    assert sum(len(r["annotations"]) for r in records) == 3


def test_partly_outside_box_is_kept(dataset):
    """detectron2 clips such boxes when loading; they are not an error."""
    json_file, images = dataset(lambda d: _ann(d, 12).update(bbox=[-5, 10, 30, 40]))
    name = register_coco_json("nasnet_test_partly_outside", str(json_file), str(images), strict=True)
    assert sum(len(r["annotations"]) for r in DatasetCatalog.get(name)) == 3


# (case, edit, annotation named in the message, field)
DROPPED = [
    ("no bbox", lambda d: _ann(d, 11).pop("bbox"), "annotation id 11", "bbox"),
    ("bbox string", lambda d: _ann(d, 11).update(bbox="1 2 3 4"), "annotation id 11", "bbox"),
    ("bbox 3 numbers", lambda d: _ann(d, 11).update(bbox=[1, 2, 3]), "annotation id 11", "bbox"),
    ("bbox with a string", lambda d: _ann(d, 11).update(bbox=[1, 2, "3", 4]), "annotation id 11", "bbox"),
    ("negative width", lambda d: _ann(d, 11).update(bbox=[1, 2, -3, 4]), "annotation id 11", "bbox"),
    ("zero height", lambda d: _ann(d, 11).update(bbox=[1, 2, 3, 0]), "annotation id 11", "bbox"),
    ("outside the image", lambda d: _ann(d, 11).update(bbox=[40, 2, 5, 5]), "annotation id 11", "bbox"),
    ("unknown image_id", lambda d: _ann(d, 11).update(image_id=99), "annotation id 11", "image_id"),
    ("duplicate annotation id", lambda d: _ann(d, 12).update(id=11), "annotation id 11", "id"),
    ("no annotation id", lambda d: _ann(d, 11).pop("id"), "annotations[1]", "id"),
    ("no category_id", lambda d: _ann(d, 11).pop("category_id"), "annotation id 11", "category_id"),
    ("ignore", lambda d: _ann(d, 11).update(ignore=1), "annotation id 11", "ignore"),
]


@pytest.mark.parametrize("case,edit,where,field", DROPPED, ids=[c[0] for c in DROPPED])
def test_invalid_annotation_is_dropped_with_one_warning(dataset, caplog, case, edit, where, field):
    json_file, images = dataset(edit)
    name = register_coco_json("nasnet_test_dropped", str(json_file), str(images))
    with caplog.at_level(logging.WARNING, logger="nasnet_det"):
        records = DatasetCatalog.get(name)
        DatasetCatalog.get(name)  # loading again does not warn again
    assert sum(len(r["annotations"]) for r in records) == 2
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert "dropped 1 of 3 annotations" in warnings[0]
    assert str(json_file) in warnings[0] and where in warnings[0] and repr(field) in warnings[0]
    # COCOEvaluator reads the metadata's json: the cleaned copy, which agrees with training
    cleaned = json.loads(Path(MetadataCatalog.get(name).json_file).read_text())
    assert len(cleaned["annotations"]) == 2
    assert json.loads(json_file.read_text()) != cleaned  # the user's file is untouched


@pytest.mark.parametrize("case,edit,where,field", DROPPED[:4], ids=[c[0] for c in DROPPED[:4]])
def test_strict_registration_refuses_invalid_annotations(dataset, case, edit, where, field):
    json_file, images = dataset(edit)
    with pytest.raises(DatasetError) as err:
        register_coco_json("nasnet_test_strict", str(json_file), str(images), strict=True)
    assert str(json_file) in str(err.value) and where in str(err.value) and repr(field) in str(err.value)


def test_strict_config_key_refuses_at_check_datasets(dataset, caplog):
    json_file, images = dataset(lambda d: _ann(d, 12).update(bbox="oops"))
    name = register_coco_json("nasnet_test_strict_cfg", str(json_file), str(images))
    cfg = load_config(DEMO, ["DATASETS.STRICT_ANNOTATIONS", "True", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                             "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)"])
    with caplog.at_level(logging.WARNING, logger="nasnet_det"), pytest.raises(DatasetError) as err:
        check_datasets([name], cfg)
    assert "STRICT_ANNOTATIONS" in str(err.value) and "annotation id 12" in str(err.value)
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]  # no warning before the error
    check_datasets([name], load_config(DEMO, ["MODEL.ROI_HEADS.NUM_CLASSES", "2"]))  # default: allowed


def test_many_dropped_annotations_give_one_warning_with_a_count(dataset, caplog):
    def edit(data):
        data["annotations"] += [{"id": 100 + i, "image_id": 2, "category_id": 1, "bbox": [1, 1, -1, 1]}
                                for i in range(7)]
    json_file, images = dataset(edit)
    name = register_coco_json("nasnet_test_many", str(json_file), str(images))
    with caplog.at_level(logging.WARNING, logger="nasnet_det"):
        DatasetCatalog.get(name)
    (message,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "dropped 7 of 10 annotations" in message and "annotation id 100" in message and "and 4 more" in message


def _write_image(images: Path, name: str, width: int, height: int) -> None:
    import cv2

    cv2.imwrite(str(images / name), np.zeros((height, width, 3), np.uint8))


# (case, edit of the json data, or raw bytes, or an edit of the image folder; the message must match)
STRUCTURAL = [
    ("not JSON", None, b'{"images": [', r"instances\.json.*not valid JSON.*line 1"),
    ("not UTF-8", None, b'\xff\xfe{"images": []}', r"instances\.json.*not UTF-8"),
    ("a JSON list", None, b"[1, 2]", r"instances\.json.*JSON list"),
    ("no categories", lambda d: d.pop("categories"), None, r"instances\.json.*'categories' is missing"),
    ("no annotations", lambda d: d.pop("annotations"), None, r"instances\.json.*'annotations' is missing"),
    ("unknown category_id", lambda d: _ann(d, 11).update(category_id=2), None,
     r"instances\.json: annotation id 11, field 'category_id' = 2 is not in 'categories'"),
    ("category_id a string", lambda d: _ann(d, 11).update(category_id="3"), None,
     r"annotation id 11, field 'category_id' = '3'"),
    ("image without width", lambda d: d["images"][1].pop("width"), None, r"instances\.json: image id 2 has no 'width'"),
    ("image without file_name", lambda d: d["images"][0].pop("file_name"), None,
     r"instances\.json: image id 1 has no 'file_name'"),
    ("image height a string", lambda d: d["images"][0].update(height="24"), None,
     r"image id 1, field 'height' = '24'"),
    ("duplicate image id", lambda d: d["images"][1].update(id=1), None, r"image id 1 appears twice"),
    ("size mismatch", lambda d: d["images"][1].update(width=64), None,
     r"instances\.json: image id 2, fields 'width', 'height' = 64, 24 but .*b\.png' is 32x24"),
    ("missing image file", lambda d: d["images"][1].update(file_name="gone.png"), None,
     r"instances\.json: image id 2, field 'file_name' = 'gone\.png'.*does not exist"),
    ("no images", lambda d: d.update(images=[], annotations=[]), None, r"instances\.json': 'images' is empty"),
    ("empty annotations", lambda d: d.update(annotations=[]), None,
     r"instances\.json' has no usable box annotation \('annotations' is empty\)"),
    ("every box invalid", lambda d: [a.update(bbox=[500, 500, 4, 4]) for a in d["annotations"]], None,
     r"has no usable box annotation \(all \d+ were invalid and dropped: .*annotation id 10, field 'bbox'"),
]


@pytest.mark.parametrize("case,edit,text,pattern", STRUCTURAL, ids=[c[0] for c in STRUCTURAL])
def test_structural_problem_is_one_dataset_error(dataset, case, edit, text, pattern):
    json_file, images = dataset(edit, text)
    with pytest.raises(DatasetError, match=pattern):
        register_coco_json("nasnet_test_structural", str(json_file), str(images))


def test_unreadable_image_file_is_one_dataset_error(dataset):
    json_file, images = dataset()
    (images / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"image id 2: .*b\.png' cannot be read as an image"):
        register_coco_json("nasnet_test_unreadable", str(json_file), str(images))


def test_num_classes_must_match_the_dataset(dataset):
    json_file, images = dataset()
    name = register_coco_json("nasnet_test_classes", str(json_file), str(images))
    cfg = load_config(DEMO, ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)"])  # 5 classes
    with pytest.raises(ConfigError, match=r"MODEL\.ROI_HEADS\.NUM_CLASSES is 5 but dataset 'nasnet_test_classes' "
                                          r"\(.*instances\.json\) has 2 categories; "
                                          r"set MODEL\.ROI_HEADS\.NUM_CLASSES 2"):
        check_num_classes(cfg)
    with pytest.raises(ConfigError, match="NUM_CLASSES is 5"):
        check_datasets([name], cfg)
    check_num_classes(load_config(DEMO, ["MODEL.ROI_HEADS.NUM_CLASSES", "2", "DATASETS.TRAIN", f"('{name}',)",
                                         "DATASETS.TEST", "()"]))


def test_large_datasets_read_a_sample_of_image_headers(dataset, monkeypatch):
    """Every file must exist; beyond FULL_SIZE_CHECK_LIMIT images only a sample of headers is read."""
    from nasnet_det.detection import dataset_check

    json_file, images = dataset()
    assert dataset_check.check_coco_json(str(json_file), str(images)).headers_read == 2
    monkeypatch.setattr(dataset_check, "FULL_SIZE_CHECK_LIMIT", 1)
    monkeypatch.setattr(dataset_check, "SIZE_SAMPLE", 1)
    assert dataset_check.check_coco_json(str(json_file), str(images)).headers_read == 1


# --------------------------------------------------------------------------- the command line
def _train_net(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", DEMO, *args,
                           "SOLVER.MAX_ITER", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)


CLI_CASES = [
    ("not JSON", None, b"{oops", "not valid JSON"),
    ("unknown category_id", lambda d: _ann(d, 11).update(category_id=7), None, "annotation id 11, field 'category_id'"),
    ("missing image file", lambda d: d["images"][1].update(file_name="gone.png"), None, "gone.png"),
    ("empty annotations", lambda d: d.update(annotations=[]), None, "no usable box annotation"),
]


@pytest.mark.parametrize("case,edit,text,needle", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_train_net_bad_dataset_is_one_error_line(dataset, tmp_path, case, edit, text, needle):
    json_file, images = dataset(edit, text)
    proc = _train_net("--dataset-json", str(json_file), "--image-root", str(images),
                      "OUTPUT_DIR", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "instances.json" in errors[0], proc.stderr[-2000:]


def test_train_net_num_classes_mismatch_is_one_error_line(dataset, tmp_path):
    """The demo config has 5 classes, the dataset 2 (needs check_datasets(..., cfg) in train_net setup())."""
    json_file, images = dataset()
    proc = _train_net("--dataset-json", str(json_file), "--image-root", str(images),
                      "OUTPUT_DIR", str(tmp_path / "out"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MODEL.ROI_HEADS.NUM_CLASSES is 5" in errors[0] and "2 categories" in errors[0], \
        proc.stderr[-2000:]


def test_errors_share_the_project_base():
    assert issubclass(DatasetError, NASNetError)


def test_an_error_raised_in_a_dataloader_worker_keeps_its_one_line():
    """A truncated JPEG is found when a worker decodes it; torch re-raises the error in the main
    process with the worker's traceback inside the message, which the CLIs print as `error: ...`."""
    from torch.utils.data import DataLoader, Dataset

    from nasnet_det.detection.data import ImageReadError

    class Truncated(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):
            raise ImageReadError("photos/a.jpg: image file is truncated; re-save or remove it")

    with pytest.raises(ImageReadError) as info:
        next(iter(DataLoader(Truncated(), num_workers=1)))
    assert str(info.value) == "photos/a.jpg: image file is truncated; re-save or remove it"
