"""The fault and bad-input corpus of issue 15: a generator of small malformed inputs of every kind.

``build_corpus(root)`` writes one folder per item under ``root``, each self-contained: the bad
file plus whatever the tool needs to reach it (a valid COCO dataset, ImageFolder data, a search
folder). Paths inside the files are relative to the item folder, so a test can copy an item
anywhere and run a tool with that folder as its working directory. Everything is generated
(tiny PNGs, a synthetic search run), so the corpus needs neither the shared data nor a network.

Item names say what is wrong; ``tests/test_fault_corpus.py`` says which tool runs on which item.
"""
from __future__ import annotations

import copy
import functools
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "nasnet_demo_synthetic.yaml"
SEARCH_CONFIG = ROOT / "configs" / "search" / "cpu_demo.yaml"
SEARCH_RUN = "_search_run"  # the folder of the one real search run, not an item
MARKER = "pwned.txt"  # written into the item folder if a crafted pickle's code runs

W, H = 64, 48  # the detection images
NUM_CATEGORIES = 5  # the demo detector's MODEL.ROI_HEADS.NUM_CLASSES

VALID_COCO: dict[str, Any] = {
    "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
               {"id": 2, "file_name": "b.png", "width": W, "height": H}],
    "annotations": [{"id": 10 + k, "image_id": 1 + k % 2, "category_id": 1 + k, "bbox": [2 + 6 * k, 3, 10, 12],
                     "area": 120, "iscrowd": 0} for k in range(NUM_CATEGORIES)],
    "categories": [{"id": 1 + k, "name": f"class{k}"} for k in range(NUM_CATEGORIES)],
}

#: A search that needs no data and no training: synthetic rewards, inline children.
SYNTHETIC_SEARCH = {"name": "corpus", "strategy": "random", "num_archs": 4, "seed": 0,
                    "child": {"trainer": "synthetic"}, "executor": {"kind": "inline"}}

ITEMS: dict[str, Callable[[Path], None]] = {}


def item(name: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    """Register a function that writes the item ``name`` into an empty folder."""
    def register(write: Callable[[Path], None]) -> Callable[[Path], None]:
        ITEMS[name] = write
        return write
    return register


def build_corpus(root: Path) -> dict[str, Path]:
    """Write every item into ``root/<name>/``; returns name -> folder."""
    folders = {}
    for name, write in ITEMS.items():
        folder = root / name
        folder.mkdir(parents=True)
        write(folder)
        folders[name] = folder
    return folders


# ------------------------------------------------------------------ building blocks


def _png(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (127, 127, 127)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def coco(folder: Path, edit: Callable[[dict], Any] | None = None, text: bytes | None = None) -> None:
    """``instances.json`` (the valid dataset, after ``edit``, or raw ``text``) and ``images/``."""
    for name in ("a.png", "b.png"):
        _png(folder / "images" / name, (W, H))
    data = copy.deepcopy(VALID_COCO)
    if edit is not None:
        edit(data)
    (folder / "instances.json").write_bytes(text if text is not None else json.dumps(data).encode())


def _annotation(data: dict, ann_id: int = 11) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def detector_config(folder: Path, body: str) -> None:
    """``config.yaml``: the demo detector config, changed by the yaml text ``body``; and a valid dataset."""
    (folder / "config.yaml").write_text(f"_BASE_: {json.dumps(str(DEMO_CONFIG))}\n{body}")
    coco(folder)


def image_folder(root: Path, classes: dict[str, int]) -> None:
    """An ImageFolder: ``n`` tiny class-coloured PNGs per class name (0 gives an empty class folder)."""
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / name / f"{i}.png", (16, 16), (60 * c % 256, 20 * i % 256, 90))


FOUR_CLASSES = {f"class_{c}": 4 for c in range(4)}
TINY_NETWORK = {"genotype": "nasnet_a", "num_cells": 3, "penultimate_filters": 48, "image_size": 16}


def pretrain_config(folder: Path, train_classes: dict[str, int] = FOUR_CLASSES,
                    val_classes: dict[str, int] | None = None, **changes: dict[str, Any]) -> None:
    """``pretrain.yaml``: a tiny pretraining run on ``data/`` into ``out/``, with section ``changes``
    (``optim={"lr": -1}``); ``*_classes``: images per class folder of ``data/train``, ``data/val``."""
    image_folder(folder / "data" / "train", train_classes)
    image_folder(folder / "data" / "val", val_classes or {k: 2 for k in train_classes})
    cfg: dict[str, dict[str, Any]] = {
        "model": {"arch": "nasnet_a_cifar", "overrides": dict(TINY_NETWORK)},
        "data": {"train_dir": "data/train", "val_dir": "data/val", "image_size": 16, "cifar_style": True,
                 "workers": 0},
        "optim": {"lr": 0.05},
        "train": {"output_dir": "out", "max_steps": 1, "batch_size": 4, "threads": 1, "progress_bar": False,
                  "tensorboard": False},
    }
    for section, values in changes.items():
        cfg[section].update(values)
    (folder / "pretrain.yaml").write_text(yaml.safe_dump(cfg))


def genotype(folder: Path, edit: Callable[[dict], Any] | None = None, raw: bytes | None = None) -> None:
    """``genotype.json`` (NASNet-A after ``edit``, or ``raw`` bytes), with a pretraining config using it."""
    from nasnet_det.space import NASNET_A

    data = NASNET_A.to_dict()
    if edit is not None:
        edit(data)
    (folder / "genotype.json").write_bytes(raw if raw is not None else json.dumps(data).encode())
    pretrain_config(folder, model={"overrides": {**TINY_NETWORK, "genotype": "genotype.json"}})
    coco(folder)  # for train_net MODEL.NASNET.GENOTYPE


def search_config(folder: Path, **changes: Any) -> None:
    """``search.yaml``: the synthetic search, with top-level ``changes`` (sections merged)."""
    cfg = copy.deepcopy(SYNTHETIC_SEARCH)
    for key, value in changes.items():
        cfg[key] = dict(cfg.get(key, {}), **value) if isinstance(value, dict) else value
    (folder / "search.yaml").write_text(yaml.safe_dump(cfg))


def search_folder(folder: Path, damage: Callable[[list[str]], list[str]]) -> None:
    """A finished synthetic search's folder whose ``trials.jsonl`` lines are edited by ``damage``.

    The search runs once per corpus, into ``_search_run/`` next to the items (inline, synthetic
    rewards: about a second); each log item is a copy of it.
    """
    from nasnet_det.durable import LOCK_NAME

    source = folder.parent / SEARCH_RUN
    if not (source / "run" / "trials.jsonl").exists():
        from nasnet_det.search import InlineExecutor, load_config, run_search

        source.mkdir(exist_ok=True)
        search_config(source)
        run_search(load_config(source / "search.yaml"), source / "run", executor=InlineExecutor())
    shutil.copytree(source / "run", folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK_NAME))
    log = folder / "trials.jsonl"
    log.write_text("".join(damage(log.read_text().splitlines(keepends=True))))


def _edit_record(lines: list[str], pick: Callable[[dict], bool], change: Callable[[dict], Any]) -> list[str]:
    """Apply ``change`` to the first record ``pick`` selects that is not the last line."""
    for i, line in enumerate(lines[:-1]):
        rec = json.loads(line)
        if pick(rec):
            change(rec)
            return lines[:i] + [json.dumps(rec) + "\n"] + lines[i + 1:]
    raise AssertionError("no record to damage")


class _Plant:
    """Unpickling calls ``open(MARKER, 'w')`` in the working directory: code from the file runs."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


@functools.lru_cache(maxsize=1)
def detector_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the demo detector's state dict (built once per process)."""
    import nasnet_det.detection  # noqa: F401, I001  (registers the backbone; before detectron2.modeling)

    # isort: split
    from detectron2.modeling import build_model

    from nasnet_det.detection import load_config

    model = build_model(load_config(str(DEMO_CONFIG), ["MODEL.DEVICE", "cpu"]))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ detection datasets

item("ds-not-json")(lambda f: coco(f, text=b'{"images": [{"id": 1,'))
item("ds-unknown-category")(lambda f: coco(f, lambda d: _annotation(d).update(category_id=99)))
item("ds-no-bbox")(lambda f: coco(f, lambda d: _annotation(d).pop("bbox")))
item("ds-bbox-string")(lambda f: coco(f, lambda d: _annotation(d).update(bbox="2 3 10 12")))
item("ds-size-mismatch")(lambda f: coco(f, lambda d: d["images"][1].update(width=2 * W)))
item("ds-missing-image")(lambda f: coco(f, lambda d: d["images"][1].update(file_name="gone.png")))
item("ds-box-outside")(lambda f: coco(f, lambda d: _annotation(d).update(bbox=[W + 10, 3, 10, 12])))
item("ds-negative-width")(lambda f: coco(f, lambda d: _annotation(d).update(bbox=[2, 3, -10, 12])))
item("ds-unknown-image-id")(lambda f: coco(f, lambda d: _annotation(d).update(image_id=77)))


@item("ds-corrupt-image")
def _corrupt_image(folder: Path) -> None:
    coco(folder)
    (folder / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)


item("ds-good")(coco)  # for bad overrides and for --eval-only without weights

# ------------------------------------------------------------------ genotypes


def _set_op(value: Any) -> Callable[[dict], None]:
    return lambda d: d["normal"]["blocks"][0]["ops"].__setitem__(0, value)


item("gen-binary")(lambda f: genotype(f, raw=b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 20))
item("gen-op-list")(lambda f: genotype(f, _set_op(["sep_conv_3x3"])))
item("gen-deep")(lambda f: genotype(f, raw=b'{"normal": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"))
item("gen-unknown-op")(lambda f: genotype(f, _set_op("sep_conv_9x9")))
item("gen-bad-input")(lambda f: genotype(f, lambda d: d["reduce"]["blocks"][2].update(inputs=[0, 9])))

# ------------------------------------------------------------------ detector configs

item("cfg-unknown-key")(lambda f: detector_config(f, "SOLVER:\n  MAX_ITR: 3\n"))
item("cfg-max-iter-thirty")(lambda f: detector_config(f, "SOLVER:\n  MAX_ITER: thirty\n"))
item("cfg-num-classes")(lambda f: detector_config(f, "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\n"))

# ------------------------------------------------------------------ search configs and trial logs

item("search-unknown-key")(lambda f: search_config(f, child={"epoch": 1}))
item("search-bad-strategy")(lambda f: search_config(f, strategy="simulated_annealing"))
item("search-negative-archs")(lambda f: search_config(f, num_archs=-3))
item("log-corrupt-mid")(lambda f: search_folder(f, lambda lines: lines[:2] + ['{"trial_id": 1, "sta\n'] + lines[2:]))
item("log-no-decisions")(lambda f: search_folder(f, lambda lines: _edit_record(
    lines, lambda r: r["trial_id"] == 1, lambda r: r.pop("decisions"))))
item("log-reward-high")(lambda f: search_folder(f, lambda lines: _edit_record(
    lines, lambda r: r["status"] == "ok", lambda r: r.update(reward="high"))))
item("search-good")(search_config)  # for bad command-line arguments (compare's --genotype)
# a weight-sharing search folder without its shared weights (evaluate-ranking needs them)
item("ws-no-supernet")(lambda f: (f / "config.yaml").write_text(yaml.safe_dump({"mode": "weight_sharing"})))

# ------------------------------------------------------------------ pretraining configs

item("pt-negative-lr")(lambda f: pretrain_config(f, optim={"lr": -0.1}))
item("pt-negative-max-steps")(lambda f: pretrain_config(f, train={"max_steps": -3}))
item("pt-one-class")(lambda f: pretrain_config(f, {"only": 6}))
item("pt-empty-class")(lambda f: pretrain_config(f, {"a": 4, "b": 4, "c": 0}, {"a": 2, "b": 2, "c": 2}))

# ------------------------------------------------------------------ weights and checkpoints


@item("w-truncated-safetensors")
def _truncated_safetensors(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    coco(folder)
    save_file({"weight": torch.zeros(64, 64)}, str(folder / "weights.safetensors"))
    data = (folder / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(data[: len(data) // 2])


@item("w-zip-not-checkpoint")
def _zip(folder: Path) -> None:
    coco(folder)
    with zipfile.ZipFile(folder / "weights.pth", "w") as z:
        z.writestr("readme.txt", "a zip archive, but not a torch checkpoint")


@item("w-text-file")
def _text(folder: Path) -> None:
    coco(folder)
    (folder / "weights.txt").write_text("these are my notes, not weights\n")


@item("w-marker-pickle")
def _marker(folder: Path) -> None:
    import torch

    coco(folder)
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Plant()}, folder / "weights.pth")


@item("w-d2-wrong-shapes")
def _wrong_shapes(folder: Path) -> None:
    coco(folder)
    state = {k: np.zeros((s[0] + 1, *s[1:]) if s else (2,), np.float32) for k, s in detector_shapes().items()}
    (folder / "weights.pkl").write_bytes(pickle.dumps({"model": state, "__author__": "corpus"}))


@item("w-too-few-keys")
def _too_few(folder: Path) -> None:
    import torch

    coco(folder)
    name, shape = next((k, s) for k, s in detector_shapes().items() if k.startswith("backbone."))
    kept = {name: torch.zeros(shape), "classifier.weight": torch.zeros(10, 4)}  # one backbone key of hundreds
    torch.save({"model": kept}, folder / "weights.pth")


@item("ckpt-empty-last-checkpoint")
def _empty_last(folder: Path) -> None:
    coco(folder)
    (folder / "out").mkdir()
    (folder / "out" / "last_checkpoint").write_text("")


@item("ckpt-zero-byte-model-final")
def _zero_final(folder: Path) -> None:
    coco(folder)
    (folder / "out").mkdir()
    (folder / "out" / "model_final.pth").write_bytes(b"")
    (folder / "out" / "last_checkpoint").write_text("model_final.pth")


# ------------------------------------------------------------------ demo inputs

item("img-corrupt-jpg")(lambda f: (f / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x13" * 64))
item("video-text-mp4")(lambda f: (f / "clip.mp4").write_text("not a video, just text\n"))
