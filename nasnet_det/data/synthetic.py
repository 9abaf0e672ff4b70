"""A procedural detection dataset: coloured shapes on busy backgrounds, written as COCO json.

``make demo`` must train a detector from scratch on a CPU in minutes and still show that it
*learns*, so the data has to be easy enough to converge quickly yet not degenerate: five shape
classes, each with its own hue family (jittered by ``SyntheticSpec.hue_jitter``; 90 makes colours
random so that only the outline tells the classes apart, a much slower task for a small detector
trained from scratch), drawn at random sizes, rotations, saturations and brightnesses on noisy
gradients with clutter lines of any colour. Category ids are deliberately
sparse (1, 2, 4, 7, 9) so the contiguous-id mapping of detectron2 and the evaluation are exercised
the same way as on real COCO.

Everything is deterministic by seed: image ``i`` of a split is drawn from its own generator seeded
with ``(seed, split, i)``, so it does not depend on how many images come before it. This module
needs only numpy and OpenCV (no torch, no detectron2).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

#: bump when the drawing code changes, so that a cached dataset is regenerated
GENERATOR_VERSION = 2

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def _regular(n: int) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) - math.pi / 2
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _circle() -> np.ndarray:
    return _regular(48)


def _square() -> np.ndarray:
    return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * 0.75


def _triangle() -> np.ndarray:
    return _regular(3)


def _star() -> np.ndarray:
    outer = _regular(5)
    inner = _regular(5) * 0.42
    # rotate the inner ring by half a step so the points alternate outer / inner
    turn = math.pi / 5
    rot = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    inner = inner @ rot.T
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross() -> np.ndarray:
    w, arm = 0.3, 0.95  # half the bar width, half the bar length
    return np.array([[-w, -arm], [w, -arm], [w, -w], [arm, -w], [arm, w], [w, w], [w, arm], [-w, arm], [-w, w],
                     [-arm, w], [-arm, -w], [-w, -w]])


@dataclass(frozen=True)
class ShapeClass:
    """One category: its COCO id, name, outline (a polygon in the unit disc) and hue (OpenCV, 0-180)."""

    id: int
    name: str
    outline: Callable[[], np.ndarray]
    hue: float


#: the categories, with sparse COCO ids on purpose
SHAPES: tuple[ShapeClass, ...] = (
    ShapeClass(1, "circle", _circle, hue=0.0),
    ShapeClass(2, "square", _square, hue=30.0),
    ShapeClass(4, "triangle", _triangle, hue=65.0),
    ShapeClass(7, "star", _star, hue=105.0),
    ShapeClass(9, "cross", _cross, hue=145.0),
)


def categories() -> list[dict]:
    """The COCO ``categories`` list of the dataset."""
    return [{"id": s.id, "name": s.name, "supercategory": "shape"} for s in SHAPES]


@dataclass(frozen=True)
class SyntheticSpec:
    """How the images look. The defaults are what ``make demo`` trains on."""

    image_size: int = 192
    min_objects: int = 1
    max_objects: int = 4
    # object size = radius of the circle the shape is inscribed in, in pixels
    min_radius: int = 12
    max_radius: int = 40
    noise_std: tuple[float, float] = (3.0, 14.0)
    clutter_lines: tuple[int, int] = (2, 10)
    # minimum colour distance (sum of |BGR| differences) between an object and the background under it
    min_contrast: float = 90.0
    # how far (OpenCV hue units, 0-180 is the full circle) an object's hue strays from its class hue
    hue_jitter: float = 8.0
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 4 <= self.min_radius <= self.max_radius:
            raise ValueError(f"need 4 <= min_radius <= max_radius, got {self.min_radius}, {self.max_radius}")
        if 2 * self.max_radius + 2 > self.image_size:
            raise ValueError(f"max_radius {self.max_radius} does not fit in a {self.image_size}px image")


@dataclass
class SyntheticObject:
    """One drawn object: category, tight box (x, y, w, h) of its pixels, pixel area, and its mask."""

    category_id: int
    bbox: tuple[int, int, int, int]
    area: int
    mask: np.ndarray = field(repr=False)


def _random_colour(
    rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float], hue: tuple[float, float] = (0, 180)
) -> np.ndarray:
    h = rng.uniform(*hue) % 180
    hsv = np.array([[[h, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], dtype=np.float32).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """A linear gradient between two muted colours, with clutter lines; noise is added at the end."""
    size = spec.image_size
    c0 = _random_colour(rng, (0.0, 0.6), (0.15, 0.9))
    c1 = _random_colour(rng, (0.0, 0.6), (0.15, 0.9))
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xs - 0.5) * math.cos(theta) + (ys - 0.5) * math.sin(theta), 0.0, 1.0)[..., None]
    img = (c0 * (1 - t) + c1 * t).astype(np.uint8)
    for _ in range(int(rng.integers(spec.clutter_lines[0], spec.clutter_lines[1] + 1))):
        p0 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, 2))
        p1 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, 2))
        colour = tuple(float(v) for v in _random_colour(rng, (0.0, 1.0), (0.1, 1.0)))
        cv2.line(img, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _place(rng: np.random.Generator, spec: SyntheticSpec, taken: list[tuple[int, int, int, int]]):
    """A (cx, cy, r) whose bounding square is inside the image and overlaps no earlier object."""
    size = spec.image_size
    for _ in range(60):
        r = int(rng.integers(spec.min_radius, spec.max_radius + 1))
        cx = int(rng.integers(r + 1, size - r - 1))
        cy = int(rng.integers(r + 1, size - r - 1))
        box = (cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            return cx, cy, r, box
    return None


def render_sample(rng: np.random.Generator, spec: SyntheticSpec = SyntheticSpec()):
    """Draw one image; return ``(bgr_uint8_image, [SyntheticObject, ...])``.

    Each object's box is computed from the pixels actually painted, so it is tight by construction.
    """
    img = _background(rng, spec)
    size = spec.image_size
    objects: list[SyntheticObject] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        placed = _place(rng, spec, taken)
        if placed is None:
            break
        cx, cy, r, box = placed
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        pts = shape.outline() * np.array([rng.uniform(0.8, 1.0), 1.0])  # mild aspect jitter
        angle = rng.uniform(0, 2 * math.pi)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = (pts @ rot.T) * r + np.array([cx, cy])
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        under = img[mask > 0].astype(np.float32).mean(axis=0)
        for _attempt in range(20):  # a colour that stands out from what is underneath
            hues = (shape.hue - spec.hue_jitter, shape.hue + spec.hue_jitter)
            colour = _random_colour(rng, (0.45, 1.0), (0.35, 1.0), hues)
            if np.abs(colour - under).sum() >= spec.min_contrast:
                break
        img[mask > 0] = colour.astype(np.uint8)
        if rng.random() < 0.5:  # a darker or lighter outline on half of the objects
            edge = np.clip(colour * rng.uniform(0.3, 1.6), 0, 255)
            cv2.polylines(img, [np.round(pts).astype(np.int32)], True, tuple(float(v) for v in edge), 1)
            cv2.polylines(mask, [np.round(pts).astype(np.int32)], True, 1, 1)
            ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append(SyntheticObject(shape.id, (x0, y0, x1 - x0, y1 - y0), int(mask.sum()), mask))
        taken.append(box)
    noise = rng.normal(0.0, rng.uniform(*spec.noise_std), img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, objects


def _split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES.get(split, 3), index])


def write_split(
    root: str | os.PathLike, split: str, num_images: int, seed: int = 0, spec: SyntheticSpec = SyntheticSpec()
) -> Path:
    """Write ``root/<split>/*.jpg`` and ``root/annotations/<split>.json``; return the json path.

    The json is written last, through a temporary file, so its presence means the split is complete.
    """
    root = Path(root)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, objects = render_sample(_split_rng(seed, split, i), spec)
        file_name = f"{i:06d}.jpg"
        if not cv2.imwrite(str(image_dir / file_name), img, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality]):
            raise OSError(f"could not write {image_dir / file_name}")
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "width": spec.image_size, "height": spec.image_size})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj.category_id,
                    "bbox": [float(v) for v in obj.bbox],
                    "area": float(obj.area),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"nasnet_det synthetic shapes, split {split}, seed {seed}",
                 "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }
    json_path = root / "annotations" / f"{split}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, json_path)
    return json_path


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lives: json files and image folders of both splits."""

    root: Path
    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path
    reused: bool


def _manifest(num_train: int, num_val: int, seed: int, spec: SyntheticSpec) -> dict:
    d = asdict(spec)
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    return {"generator_version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val, "seed": seed, "spec": d}


def make_dataset(
    root: str | os.PathLike,
    num_train: int = 400,
    num_val: int = 100,
    seed: int = 0,
    spec: SyntheticSpec = SyntheticSpec(),
) -> SyntheticDataset:
    """Generate train and held-out val splits under ``root``, or reuse them if already there.

    A dataset is reused when ``root/synthetic.json`` records the same parameters and both
    annotation files and all images exist; otherwise it is regenerated (same seed, same pixels).
    """
    root = Path(root)
    manifest = _manifest(num_train, num_val, seed, spec)
    manifest_path = root / "synthetic.json"
    ds = SyntheticDataset(
        root, root / "annotations" / "train.json", root / "train", root / "annotations" / "val.json", root / "val", True
    )
    if manifest_path.is_file() and ds.train_json.is_file() and ds.val_json.is_file():
        try:
            same = json.loads(manifest_path.read_text()) == manifest
        except ValueError:
            same = False
        if same and all(
            (folder / f"{i:06d}.jpg").is_file()
            for folder, n in ((ds.train_images, num_train), (ds.val_images, num_val))
            for i in range(n)
        ):
            return ds
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    write_split(root, "train", num_train, seed, spec)
    write_split(root, "val", num_val, seed, spec)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return SyntheticDataset(ds.root, ds.train_json, ds.train_images, ds.val_json, ds.val_images, False)
