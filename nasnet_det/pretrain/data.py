"""ImageFolder data, Inception-style augmentation and a sampler that can resume mid-epoch.

Why per-sample seeding: exact resume after a kill needs the SAME crops for the remaining images
of the interrupted epoch, whatever the number of loader workers or processes. Each sample's
augmentation therefore draws from an RNG seeded by ``(seed, epoch, index)``, never from a worker's
or the trainer's stream; the trainer's own RNG (dropout, drop path) is untouched by data loading.

Why a global-batch sampler: step ``i`` of epoch ``e`` always trains on the same ``global_batch``
images (a seeded permutation), and rank ``r`` of ``W`` takes the r-th contiguous slice of it, so a
run on 2 processes sees exactly the images a 1-process run with the same global batch sees.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from ..data.image_folder import scan_image_folder
from ..errors import ConfigError, DataError, NASNetError

# Inputs scaled to [-1, 1], as the TF-slim (and published) NASNet checkpoints expect.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def check_classes(train_dir: str, classes: list[str], val_dir: str, val_classes: list[str] | None,
                  num_classes: int | None) -> int:
    """The number of logits to build, after checking that the class folders make a classification task.

    Why: one class trains nothing and reports top-1 100 %; validation folders that differ from the
    training ones give labels that mean other classes; ``model.num_classes`` below the folder count
    fails deep in the loss (``Target 4 is out of bounds``). ``num_classes`` above the folder count
    is allowed: TF checkpoints use 1001 logits, class 0 being background.
    """
    if len(classes) < 2:
        raise DataError(f"data.train_dir {train_dir!r} has {len(classes)} class folder ({classes[0]!r}); "
                        "a classifier needs at least 2 classes (<dir>/<class>/*.jpg)")
    if val_classes is not None and val_classes != classes:
        missing, extra = sorted(set(classes) - set(val_classes)), sorted(set(val_classes) - set(classes))
        raise DataError(f"data.val_dir {val_dir!r} has other class folders than data.train_dir {train_dir!r} "
                        f"(missing: {missing or 'none'}, extra: {extra or 'none'}); "
                        "both need the same class sub-folders")
    if num_classes is None:
        return len(classes)
    if num_classes < len(classes):
        raise ConfigError(f"model.num_classes={num_classes}, but data.train_dir {train_dir!r} has "
                          f"{len(classes)} class folders; set model.num_classes={len(classes)} (or null: "
                          "the folder count)")
    return num_classes


def train_transform(image_size: int, min_crop_area: float = 0.08, color_jitter: float = 0.0,
                    cifar_style: bool = False):
    """Inception preprocessing: random-area crop (8%-100%, aspect 3/4-4/3) resized, flip, [-1, 1]."""
    from torchvision import transforms as T

    if cifar_style:
        ops = [T.Resize(image_size), T.RandomCrop(image_size, padding=image_size // 8), T.RandomHorizontalFlip()]
    else:
        ops = [T.RandomResizedCrop(image_size, scale=(min_crop_area, 1.0)), T.RandomHorizontalFlip()]
    if color_jitter > 0:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(ops)


def eval_transform(image_size: int, crop_fraction: float = 0.875, cifar_style: bool = False):
    """Resize to ``size / crop_fraction`` then central crop ``size`` (Inception eval)."""
    from torchvision import transforms as T

    resize = image_size if cifar_style else int(round(image_size / crop_fraction))
    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), T.Normalize(MEAN, STD)])


class SeededImageFolder(Dataset):
    """ImageFolder whose items are addressed by ``(epoch, index)`` (train) or ``index`` (eval).

    A corrupt or unreadable image raises DataError naming the file instead of a bare PIL error
    deep inside a loader worker.
    """

    def __init__(self, root: str, transform, seed: int = 0, per_class_limit: int = 0) -> None:
        self.root, self.transform, self.seed = root, transform, seed
        self.classes, self.samples = scan_image_folder(root, per_class_limit)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        from PIL import Image

        path, _ = self.samples[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Exception as err:  # noqa: BLE001 - any decoder failure is a data error
            raise DataError(f"cannot read image {path!r}: {err}") from None

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = self.load(index)
        # 2^31 keeps the seed positive; the tuple mixes so neighbouring epochs do not share crops.
        sample_seed = hash((self.seed, epoch, index)) % (2 ** 31)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            tensor = self.transform(image)
        return tensor, self.samples[index][1]


class GlobalBatchSampler(Sampler[list]):
    """Batches of ``(epoch, index)`` for one rank; resumable at any batch of an epoch.

    Each epoch is a permutation seeded by ``(seed, epoch)``; global batch ``i`` is
    ``perm[i*G:(i+1)*G]`` and rank ``r`` gets its ``[r*B:(r+1)*B]`` slice (``G = B * world``).
    The incomplete last global batch is dropped (every step has the same global batch).
    """

    def __init__(self, dataset_len: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 epoch: int = 0, start_batch: int = 0) -> None:
        self.n, self.batch_size, self.rank, self.world = dataset_len, batch_size, rank, world_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.global_batch = batch_size * world_size
        if self.n < self.global_batch:
            raise DataError(f"{self.n} training images are fewer than one global batch ({self.global_batch})")

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)

    def __iter__(self) -> Iterator[list]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        for i in range(self.start_batch, self.batches_per_epoch):
            lo = i * self.global_batch + self.rank * self.batch_size
            yield [(self.epoch, j) for j in perm[lo:lo + self.batch_size]]


def build_loader(dataset: Dataset, batch_sampler: Sampler | None = None, batch_size: int = 0,
                 indices: list[int] | None = None, workers: int = 0, seed: int = 0):
    """A DataLoader that never draws from the global torch RNG (it gets its own generator)."""
    from torch.utils.data import DataLoader, Subset

    gen = torch.Generator().manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, generator=gen,
                          pin_memory=torch.cuda.is_available(), persistent_workers=False)
    subset = Subset(dataset, indices) if indices is not None else dataset
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers, generator=gen,
                      pin_memory=torch.cuda.is_available())


def batches(loader: Iterable) -> Iterator:
    """Iterate ``loader``; a NASNetError raised in a loader worker comes back as one line.

    Why: torch re-raises a worker's exception with the worker's traceback prepended to its message
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."), which would turn a
    corrupt image into a traceback on the command line. The last line holds the original message.
    """
    try:
        yield from loader
    except NASNetError as err:
        lines = str(err).strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught "):
            raise type(err)(lines[-1].split(": ", 1)[-1]) from None
        raise
