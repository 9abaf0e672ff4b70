"""The image file extensions the project reads, and the one ImageFolder scanner.

Why one set: pretraining, the search's proxy data and the demo's folder inputs used to list
different extensions, so a folder of .tif images trained in one and was "empty" in another. Every
extension here is one that both PIL and OpenCV decode. Standard library only.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "scan_image_folder"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def is_image_file(path: str | Path) -> bool:
    """Whether the name ends in one of :data:`IMAGE_EXTENSIONS` (any case); the file is not opened."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def scan_image_folder(root: str | Path, per_class_limit: int = 0) -> tuple[list[str], list[tuple[str, int]]]:
    """``root/<class>/*.<ext>`` -> (sorted class names, [(path, class index)]), first N per class.

    Hidden folders (``.ipynb_checkpoints``, ...) are not classes. An empty class folder is an
    error, not skipped: it would still take a class index (and a logit) that no image ever trains.
    Files are taken in name order, so the same folder always gives the same sample list.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"dataset folder {root!r} does not exist")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"dataset folder {root!r} has no class sub-folders (expected {root}/<class>/*.jpg)")
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))
        if not files:
            raise DataError(f"class folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder (every sub-folder is a class)")
        if per_class_limit > 0:
            files = files[:per_class_limit]
        samples.extend((os.path.join(folder, f), index) for f in files)
    return classes, samples
