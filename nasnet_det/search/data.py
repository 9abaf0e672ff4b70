"""The proxy dataset for child training: decoded once per worker, split once per search, augmented in batches.

Why in-memory uint8 tensors: a search trains thousands of small children on the same few thousand
32x32 images. Decoding JPEG/PNG files once per worker process and then augmenting whole batches
with tensor ops keeps a child's time in the network, not in the data loader.

The validation split is drawn from the *training* images with a fixed ``split_seed`` (the same for
every child of a search), and children never see it during training: it is the reward, not a test.
``data.eval_split test`` evaluates on the dataset's own test images instead (ImageFolder
``<root>/test``, torchvision's test batch): for final comparisons of a few fixed cells
(``tools/search.py compare``), never for a search, which would then select on the test set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config
from ..data.image_folder import scan_image_folder
from ..errors import DataError

_CACHE: dict[tuple, "ChildData"] = {}


@dataclass
class ChildData:
    """Train and evaluation images (uint8, N x 3 x H x W), labels, and the train split's channel statistics.

    ``val_x`` / ``val_y`` are the images a child is evaluated on: the held-out validation split,
    or the test images with ``data.eval_split test``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: torch.Tensor  # (3,) in [0, 1]
    std: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


CIFAR10_TRAIN_IMAGES = 50_000


def check_dataset(cfg: Config) -> None:
    """Check in the driver, before any worker starts, everything that would fail every child: a
    wrong path, an empty class, a split larger than the data, an image that cannot be read (of
    those the split uses). One message then stops the search, instead of every trial failing."""
    root = Path(cfg.root).expanduser()
    if cfg.format == "cifar10":
        if not (root / "cifar-10-batches-py").is_dir():
            raise DataError(f"data.root: {root} has no cifar-10-batches-py folder (torchvision's CIFAR-10 "
                            f"download); download it yourself, or use data.format imagefolder")
        if cfg.eval_split == "test" and not (root / "cifar-10-batches-py" / "test_batch").is_file():
            raise DataError(f"data.eval_split: test, but {root / 'cifar-10-batches-py'} has no test_batch; "
                            f"use data.eval_split val")
        _split(CIFAR10_TRAIN_IMAGES, cfg)
        return
    paths, _labels, classes = _list_imagefolder(root)
    val_idx, train_idx = _split(len(paths), cfg)
    used = [paths[i] for i in val_idx.tolist() + train_idx.tolist()]
    if cfg.eval_split == "test":
        used += _list_test_folder(root, classes)[0]
    for path in used:
        _verify_image(path)


def num_classes(cfg: Config) -> int:
    """The number of classes of ``data.*`` without decoding an image: the driver sizes the child's
    classifier with it when it measures ``cost.*`` (the workers load the data, the driver does not)."""
    if cfg.format == "cifar10":
        return 10
    return len(_list_imagefolder(Path(cfg.root).expanduser())[2])


def _verify_image(path: Path) -> None:
    """Reads the whole file (PIL's ``verify``: headers and checksums), without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as err:  # noqa: BLE001 - PIL raises several types for a damaged file
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err}); replace or remove it") from None


def _list_imagefolder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    folder = root / "train" if (root / "train").is_dir() else root
    if not folder.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected <root>/train/<class>/<images>)")
    classes, samples = scan_image_folder(folder)
    if len(classes) < 2:
        raise DataError(f"{folder}: expected one sub-folder per class, found {len(classes)}")
    return [Path(path) for path, _ in samples], [label for _, label in samples], classes


def _list_test_folder(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """``<root>/test/<class>/<images>`` (``data.eval_split test``), with the training folder's classes."""
    folder = root / "test"
    if not folder.is_dir():
        raise DataError(f"data.eval_split: test, but {folder} does not exist (expected <root>/test/<class>/<images> "
                        f"beside <root>/train); add it or use data.eval_split val")
    test_classes, samples = scan_image_folder(folder)
    if test_classes != classes:
        raise DataError(f"{folder}: classes {test_classes} differ from the training folder's {classes}; "
                        f"the test folder needs the same class sub-folders")
    return [Path(path) for path, _ in samples], [label for _, label in samples]


def _split(n: int, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, training indices) of ``n`` images: the same for every child of a search."""
    if cfg.val_size >= n:
        raise DataError(f"data.val_size: {cfg.val_size} leaves no training images out of {n} in {cfg.root}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
    rest = order[cfg.val_size:]
    if cfg.train_size:
        if cfg.train_size > len(rest):
            raise DataError(f"data.train_size: {cfg.train_size} exceeds the {len(rest)} images left after "
                            f"the validation split in {cfg.root}")
        rest = rest[: cfg.train_size]
    return order[: cfg.val_size], rest


def _decode(paths: list[Path], image_size: int) -> torch.Tensor:
    from PIL import Image

    out = torch.empty(len(paths), image_size, image_size, 3, dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                out[i] = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(image_size, image_size, 3)
        except OSError as err:
            raise DataError(f"{path}: cannot read image ({err})") from None
    return out.permute(0, 3, 1, 2).contiguous()


def _load_cifar10(root: Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    import torchvision

    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
    except RuntimeError as err:
        raise DataError(f"{root}: CIFAR-10 (torchvision layout, cifar-10-batches-py) not found: {err}") from None
    x = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(ds.targets), list(ds.classes)


def load_child_data(cfg: Config) -> ChildData:
    """Split the training images into the children's train and held-out validation sets (with
    ``data.eval_split test``, the evaluation images are the test images instead).

    Cached per process: a worker decodes only the images the split uses, once, for all its children.
    """
    root = Path(cfg.root).expanduser()
    key = (str(root.resolve()), cfg.format, cfg.image_size, cfg.val_size, cfg.train_size, cfg.split_seed,
           cfg.eval_split)
    if key in _CACHE:
        return _CACHE[key]
    if cfg.format == "cifar10":
        x_all, y_all, classes = _load_cifar10(root)
        n = len(x_all)
    else:
        paths, labels, classes = _list_imagefolder(root)
        n = len(paths)
    val_idx, rest = _split(n, cfg)
    test = cfg.eval_split == "test"
    if cfg.format == "cifar10":
        train_x, train_y = x_all[rest], y_all[rest]
        val_x, val_y = _load_cifar10(root, train=False)[:2] if test else (x_all[val_idx], y_all[val_idx])
    else:
        train_x, train_y = _decode([paths[i] for i in rest.tolist()], cfg.image_size), torch.tensor(labels)[rest]
        eval_paths, eval_labels = (_list_test_folder(root, classes) if test else
                                   ([paths[i] for i in val_idx.tolist()], [labels[i] for i in val_idx.tolist()]))
        val_x, val_y = _decode(eval_paths, cfg.image_size), torch.tensor(eval_labels, dtype=torch.long)
    scaled = train_x.float().div_(255)
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-3)
    data = ChildData(train_x, train_y, val_x, val_y, mean, std, classes)
    _CACHE[key] = data
    return data


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float, per-channel standardised."""
    return (x.float().div(255) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, for a whole batch at once."""
    b, c, h, w = x.shape
    if pad:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
