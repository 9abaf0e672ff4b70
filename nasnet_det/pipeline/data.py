"""Where the pipeline's CIFAR-10 comes from: the shared ImageFolder, else torchvision's download.

Why an ImageFolder in every case: the search reads either layout, but pretraining reads only
ImageFolders (``<dir>/<class>/*.jpg``). When only torchvision's ``cifar-10-batches-py`` is there,
the first ``per_class`` images of each class are written once as PNG files into the run folder
(``<output>/data/cifar10``), and every stage reads that. The batch files are pickles; they are
read with the numpy-only unpickler, so a planted file cannot run code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..durable import atomic_write, atomic_write_text
from ..errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_DONE = ".complete"


@dataclass(frozen=True)
class Cifar10:
    """An ImageFolder CIFAR-10: ``root/train/<class>`` and ``root/test/<class>``, and where it came from."""

    root: Path
    source: str

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"


def how_to_get(image_folder: Path, torchvision_root: Path) -> str:
    return (f"no CIFAR-10: neither {image_folder} (ImageFolder: train/<class>/*.jpg, test/<class>/*.jpg) nor "
            f"{torchvision_root / 'cifar-10-batches-py'} (torchvision's) exists; put the shared data beside the "
            f"project (../shared/data/cifar10), or download it with `python -c \"import torchvision; "
            f"torchvision.datasets.CIFAR10('{torchvision_root}', download=True)\"` (170 MB), or set data.root")


def find_cifar10(root: str | Path, torchvision_root: str | Path, work: str | Path,
                 per_class: dict[str, int]) -> Cifar10:
    """The ImageFolder at ``root`` if it has train/ and test/, else one made in ``work`` from torchvision's
    batches under ``torchvision_root``; DataError saying how to get the data when neither exists."""
    root, tv = Path(root).expanduser(), Path(torchvision_root).expanduser()
    if root.is_dir():
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise DataError(f"data.root: {root} has no {' or '.join(missing)}/ folder (expected an ImageFolder "
                            "CIFAR-10: train/<class>/*.jpg and test/<class>/*.jpg)")
        return Cifar10(root, f"ImageFolder {root}")
    if (tv / "cifar-10-batches-py").is_dir():
        return Cifar10(write_image_folder(tv / "cifar-10-batches-py", Path(work), per_class),
                       f"torchvision {tv / 'cifar-10-batches-py'}")
    raise DataError(how_to_get(root, tv))


def write_image_folder(batches: Path, out: Path, per_class: dict[str, int]) -> Path:
    """The first ``per_class[split]`` images of each class of each split as ``out/<split>/<class>/NNNN.png``.

    ``out/.complete`` is written last, so a conversion killed half-way is done again, not trusted.
    """
    if (out / _DONE).exists():
        return out
    import io

    import numpy as np
    from PIL import Image

    from ..weights.io import safe_unpickle

    for split, names in BATCHES.items():
        counts = [0] * len(CLASSES)
        for name in names:
            path = batches / name
            if not path.is_file():
                raise DataError(f"{path}: missing from torchvision's CIFAR-10 download; download it again")
            try:
                batch = safe_unpickle(path)
                data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                labels = [int(v) for v in batch["labels"]]
            except (KeyError, ValueError, TypeError) as err:
                raise DataError(f"{path}: not a CIFAR-10 batch ({type(err).__name__}: {err}); "
                                "download it again") from None
            for image, label in zip(data, labels):
                if counts[label] >= per_class[split]:
                    continue
                buf = io.BytesIO()
                Image.fromarray(image).save(buf, format="PNG")
                with atomic_write(out / split / CLASSES[label] / f"{counts[label]:04d}.png") as f:
                    f.write(buf.getvalue())
                counts[label] += 1
    atomic_write_text(out / _DONE, "converted from torchvision's CIFAR-10\n")
    return out
