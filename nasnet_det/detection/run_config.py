"""Everything a training or evaluation run does to its config before detectron2's ``default_setup``.

One home for it, used by tools/train_net.py and the demo pipeline, so that both register, select
and check their datasets the same way. The COCO jsons a run is given (``--dataset-json`` /
``--test-json``) are recorded in ``DATASETS.COCO_JSON`` with absolute paths; every config loaded
through here registers those entries, so the ``OUTPUT_DIR/config.yaml`` a run saves can be used
as it is: ``tools/train_net.py --config-file out/config.yaml --eval-only MODEL.WEIGHTS ...``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..durable import atomic_write_bytes
from .checkpoint import resume_candidates
from .config import ConfigError, load_config
from .datasets import check_datasets, register_coco_json

TRAIN_NAME = "nasnet_train"
TEST_NAME = "nasnet_test"


def _entry(name: str, files: tuple[str, str]) -> list[str]:
    json_file, image_root = files
    return [name, os.path.abspath(os.path.expanduser(json_file)), os.path.abspath(os.path.expanduser(image_root))]


def coco_json_entries(cfg) -> list[tuple[str, str, str]]:
    """``DATASETS.COCO_JSON`` as ``(name, json_file, image_root)`` triples; one error for a malformed entry."""
    entries = []
    for entry in cfg.DATASETS.COCO_JSON:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(x, str) for x in entry)):
            raise ConfigError(f"DATASETS.COCO_JSON entry {entry!r}: expected [name, json_file, image_root]")
        entries.append(tuple(entry))
    return entries


def register_config_datasets(cfg) -> None:
    """Register every ``DATASETS.COCO_JSON`` entry."""
    for entry in coco_json_entries(cfg):
        register_coco_json(*entry)


def resolve_run_config(config_file: str, opts: list[str], *, train: tuple[str, str] | None = None,
                       test: tuple[str, str] | None = None):
    """The (unfrozen) config of a run: file, dataset jsons and trailing ``KEY VALUE`` overrides.

    ``train`` / ``test``: ``(json_file, image_root)`` of COCO-format data, recorded as
    ``nasnet_train`` / ``nasnet_test`` (``train`` is also the test set unless ``test`` is given).
    Nothing is registered or checked yet (``--print-config`` shows this).
    """
    selected: list[str] = []
    given: list[list[str]] = []
    if train is not None:
        given.append(_entry(TRAIN_NAME, train))
        selected += ["DATASETS.TRAIN", f"('{TRAIN_NAME}',)", "DATASETS.TEST", f"('{TRAIN_NAME}',)"]
    if test is not None:
        given.append(_entry(TEST_NAME, test))
        selected += ["DATASETS.TEST", f"('{TEST_NAME}',)"]
    cfg = load_config(config_file, selected + list(opts), freeze=False)
    replaced = {entry[0] for entry in given}
    kept = [e for e in cfg.DATASETS.COCO_JSON if not (isinstance(e, (list, tuple)) and e and e[0] in replaced)]
    cfg.DATASETS.COCO_JSON = kept + given
    return cfg


def setup_run_config(config_file: str, opts: list[str], *, train: tuple[str, str] | None = None,
                     test: tuple[str, str] | None = None, eval_only: bool = False, resume: bool = False,
                     allow_random_weights: bool = False):
    """``resolve_run_config``, then its datasets registered and checked; returned frozen.

    ``eval_only`` without weights to load is refused unless ``allow_random_weights``: an
    evaluation of a random model would print numbers that mean nothing.
    """
    cfg = resolve_run_config(config_file, opts, train=train, test=test)
    if eval_only and not cfg.MODEL.WEIGHTS and not allow_random_weights \
            and not (resume and resume_candidates(cfg.OUTPUT_DIR)):
        raise ConfigError("--eval-only needs the weights to evaluate: add MODEL.WEIGHTS <OUTPUT_DIR>/model_final.pth "
                          "(or --resume with an OUTPUT_DIR that has checkpoints); --allow-random-weights evaluates "
                          "a randomly initialised model on purpose")
    register_config_datasets(cfg)
    check_datasets(list(cfg.DATASETS.TEST) if eval_only else list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), cfg)
    cfg.freeze()
    return cfg


@contextlib.contextmanager
def training_config_kept(output_dir: str) -> Iterator[None]:
    """Keep ``OUTPUT_DIR/config.yaml`` as it was across detectron2's ``default_setup``.

    ``default_setup`` saves the run's config there; an ``--eval-only`` run pointed at a training
    run's folder (the README's ``--config-file output/mine/config.yaml``) would overwrite the record
    of how that model was trained. The evaluation's config goes beside it as ``config_eval.yaml``.
    """
    from detectron2.utils import comm

    path = Path(output_dir) / "config.yaml"
    before = path.read_bytes() if path.is_file() else None
    yield
    if before is not None and comm.is_main_process() and path.is_file() and path.read_bytes() != before:
        atomic_write_bytes(path.with_name("config_eval.yaml"), path.read_bytes())
        atomic_write_bytes(path, before)
