"""``add_nasnet_config(cfg)``: the MODEL.NASNET.*, INPUT.FIXED_SIZE_* and DATASETS.STRICT_ANNOTATIONS
keys of the plugin; ``load_config``: a validated config from a yaml file and KEY VALUE overrides.

Call it on ``detectron2.config.get_cfg()`` *before* ``merge_from_file``: yacs rejects keys it does
not know, which is what turns a typo in a yaml file into an error instead of a silent default.
The defaults describe NASNet-A Mobile; configs/*.yaml override them per model.
"""
from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Callable, Sequence

from detectron2.config import CfgNode as CN
from ..errors import ConfigError

# norms the backbone and ROI head can be converted to (detectron2's get_norm names)
SUPPORTED_NORMS = ("FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "GN")


def add_nasnet_config(cfg: CN) -> CN:
    """Add the NASNet keys (with defaults) to ``cfg`` in place and return it."""
    _C = cfg
    _C.MODEL.NASNET = CN()
    # A registered genotype name (nasnet_det.list_genotypes()) or a path to a genotype JSON file.
    _C.MODEL.NASNET.GENOTYPE = "nasnet_a"
    # Number of NORMAL cells ("N" of "N @ P" is NUM_CELLS / 3); two reduction cells are added.
    _C.MODEL.NASNET.NUM_CELLS = 12
    # Penultimate filters ("P" of "N @ P"); filters per op = P // 24 for NASNet-A. 0 = use FILTERS.
    _C.MODEL.NASNET.PENULTIMATE_FILTERS = 1056
    # Filters per op of the first stage (num_conv_filters); only read when PENULTIMATE_FILTERS is 0.
    _C.MODEL.NASNET.FILTERS = 0
    _C.MODEL.NASNET.STEM_MULTIPLIER = 1.0
    # 1 for NASNet-A Large: the first normal cell after a reduction reads the reduction cell's h_{i-1}.
    _C.MODEL.NASNET.SKIP_REDUCTION_LAYER_INPUT = 0
    # ScheduledDropPath: keep probability at the end of the schedule (1.0 = off) and the number of
    # training iterations the schedule spans (0 = SOLVER.MAX_ITER). Active only in training.
    _C.MODEL.NASNET.DROP_PATH_KEEP_PROB = 1.0
    _C.MODEL.NASNET.DROP_PATH_TOTAL_STEPS = 0
    # Norm layers of backbone and ROI head: one of SUPPORTED_NORMS. FrozenBN fits a pretrained
    # classifier and small batches (TF's faster_rcnn_nas keeps BN frozen); BN/SyncBN train them.
    _C.MODEL.NASNET.NORM = "FrozenBN"
    # BatchNorm momentum (PyTorch convention = 1 - TF decay) and eps; < 0 keeps the network's
    # own values (TF: decay 0.9997 -> momentum 0.0003, eps 1e-3, far too slow to train from scratch).
    _C.MODEL.NASNET.BN_MOMENTUM = -1.0
    _C.MODEL.NASNET.BN_EPS = -1.0
    # Index into the network's cell list (stem cells included) where the backbone stops and the ROI
    # head starts. -1 = at the second reduction cell, the faster_rcnn_nas split (stride 16).
    _C.MODEL.NASNET.SPLIT_AT = -1
    # Name of the backbone's single output map (RPN.IN_FEATURES / ROI_HEADS.IN_FEATURES use it).
    _C.MODEL.NASNET.OUT_FEATURE = "nas4"
    # Activation checkpointing per cell (nasnet_det.modeling.memory) of the backbone (stem conv
    # included) and the ROI head: training keeps only the cell boundaries plus one cell's interior
    # alive instead of every cell's ~40 intermediate maps, for about one extra forward of compute.
    # Outputs, gradients and state_dict keys are unchanged; inert in eval. For batches that do not fit.
    _C.MODEL.NASNET.MEMORY_SAVING = False

    # Fixed (height, width) resize that ignores the aspect ratio, as TF's fixed_shape_resizer does.
    # (0, 0) = off: detectron2's ResizeShortestEdge with INPUT.MIN_SIZE_* / MAX_SIZE_*.
    _C.INPUT.FIXED_SIZE_TRAIN = (0, 0)
    _C.INPUT.FIXED_SIZE_TEST = (0, 0)

    # False: annotations that cannot be trained on (no or malformed bbox, a box outside its image,
    # an unknown image_id, a duplicate id) are dropped at registration with one warning, as
    # detectron2 drops empty annotations. True: any such annotation stops the run with an error.
    _C.DATASETS.STRICT_ANNOTATIONS = False
    return cfg


def _validate(cfg: CN, source_of: Callable[[str], str]) -> None:
    """Checks that would otherwise fail late (at model build or the first batch) or silently."""
    from ..space import GenotypeError, resolve_genotype

    spec = cfg.MODEL.NASNET.GENOTYPE
    if not isinstance(spec, str):
        raise ConfigError(f"MODEL.NASNET.GENOTYPE={spec!r} ({source_of('MODEL.NASNET.GENOTYPE')}): give a "
                          "registered genotype name or the path of a genotype JSON file")
    try:
        resolve_genotype(spec)
    except GenotypeError as err:
        raise ConfigError(f"MODEL.NASNET.GENOTYPE={spec!r}: {err}") from err
    except (OSError, ValueError) as err:  # ValueError: e.g. a NUL byte in the path
        raise ConfigError(f"MODEL.NASNET.GENOTYPE={spec!r}: cannot read the genotype file: {err}") from err
    if cfg.MODEL.NASNET.NORM not in SUPPORTED_NORMS:
        raise ConfigError(f"MODEL.NASNET.NORM={cfg.MODEL.NASNET.NORM!r}: use one of {SUPPORTED_NORMS}")
    for key, ok, requirement in _RANGE_CHECKS:
        value = _lookup(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} = {value!r} ({source_of(key)}): {requirement}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fixed_size(value: Any) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) and v >= 0 for v in value)
            and (value[0] > 0) == (value[1] > 0))


# (key, test, what the value must be): values that yacs' type check lets through but that fail
# later (a negative iteration count trains nothing and exits 0) or deep inside detectron2.
_RANGE_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("SOLVER.MAX_ITER", lambda v: _is_int(v) and v > 0, "must be a positive integer (training iterations)"),
    ("SOLVER.BASE_LR", lambda v: isinstance(v, float) and v >= 0, "must be a number >= 0, such as 0.02"),
    ("SOLVER.IMS_PER_BATCH", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1 (images per batch)"),
    ("INPUT.FIXED_SIZE_TRAIN", _is_fixed_size, "must be (height, width) in pixels, or (0, 0) for no fixed size"),
    ("INPUT.FIXED_SIZE_TEST", _is_fixed_size, "must be (height, width) in pixels, or (0, 0) for no fixed size"),
)


def _leaf_keys(node: CN, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, value in node.items():
        full = f"{prefix}{name}"
        keys += _leaf_keys(value, full + ".") if isinstance(value, CN) else [full]
    return keys


def _unknown_key(cfg: CN, key: Any, where: str) -> ConfigError:
    """'unknown config key X (did you mean Y?)', Y the closest existing key (case-insensitive)."""
    keys = _leaf_keys(cfg)
    upper = {k.upper(): k for k in keys}
    close = difflib.get_close_matches(str(key).upper(), list(upper), n=1, cutoff=0.6)
    hint = f" (did you mean {upper[close[0]]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def _lookup(cfg: CN, key: Any, where: str = "config") -> Any:
    """The value at dotted ``key``; ConfigError naming the key when there is none."""
    if not isinstance(key, str):
        raise ConfigError(f"{where}: config key {key!r} is not a string")
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            raise _unknown_key(cfg, key, where)
        node = node[part]
    return node


def _kind(value: Any) -> str:
    """How to write a value of the type of ``value`` on the command line or in yaml."""
    if isinstance(value, bool):
        return "True or False"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a decimal point"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (tuple, list)):
        return "a list or tuple"
    return type(value).__name__


def _type_error(key: str, value: Any, current: Any, where: str) -> ConfigError:
    return ConfigError(f"{where}: {key} = {value!r} has the wrong type: expected {_kind(current)}, "
                       f"such as {current!r}")


def _key_in_yacs_message(err: Exception) -> str | None:
    """The full key that yacs names at the end of its KeyError / ValueError messages."""
    message = str(err.args[0]) if err.args else ""
    return message.rsplit("key: ", 1)[1].strip() if "key: " in message else None


def _merge_file(cfg: CN, config_file: str) -> None:
    """``merge_from_file`` with one ConfigError naming the file, the key and the value."""
    import yaml

    where = f"config file {config_file!r}"
    if not os.path.isfile(config_file):
        raise ConfigError(f"{where} does not exist")
    try:
        cfg.merge_from_file(config_file)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text (byte {err.start}): give a yaml file") from err
    except OSError as err:  # a _BASE_ file that is missing or unreadable
        raise ConfigError(f"{where}: cannot read {err.filename or config_file!r}: {err.strerror or err}") from err
    except (yaml.YAMLError, AssertionError, TypeError, AttributeError) as err:  # not yaml / not a mapping
        reason = " ".join(str(err).split())  # yaml's messages span several lines
        raise ConfigError(f"{where} is not a yaml mapping of config keys: {reason}") from err
    except KeyError as err:
        key = _key_in_yacs_message(err)
        if key is None:
            raise ConfigError(f"{where}: {err.args[0] if err.args else err}") from err
        raise _unknown_key(cfg, key, where) from err
    except ValueError as err:
        key = _key_in_yacs_message(err)
        if key is None:
            raise ConfigError(f"{where}: {err}") from err
        raise _type_error(key, _file_value(cfg, config_file, key), _lookup(cfg, key, where), where) from err


def _file_value(cfg: CN, config_file: str, key: str) -> Any:
    """The value ``config_file`` (with its _BASE_ files) gives ``key``."""
    node: Any = cfg.load_yaml_with_base(config_file, allow_unsafe=True)
    for part in key.split("."):
        node = node[part]
    return node


def _merge_overrides(cfg: CN, opts: Sequence[Any]) -> set[str]:
    """Merge KEY VALUE pairs one at a time, so that every error names its own pair; return the keys."""
    where = "command-line override"
    if len(opts) % 2:
        raise ConfigError(f"{where}s are KEY VALUE pairs, but {len(opts)} item(s) were given: "
                          f"{opts[-1]!r} has no value")
    for key, value in zip(opts[0::2], opts[1::2]):
        current = _lookup(cfg, key, where)
        if isinstance(current, CN):
            raise ConfigError(f"{where}: {key!r} is a group of keys, not one; set its keys, such as "
                              f"{', '.join(_leaf_keys(current, key + '.')[:3])}")
        try:
            cfg.merge_from_list([key, value])
        except ValueError as err:  # yacs: type mismatch
            raise _type_error(key, value, current, where) from err
        except (TypeError, RecursionError, MemoryError) as err:  # literal_eval of e.g. "{[]: 1}"
            raise ConfigError(f"{where}: {key} = {value!r} cannot be parsed as a value: {err}") from err
    return set(opts[0::2])


def load_config(config_file: str | None = None, opts: Sequence[Any] | None = None, freeze: bool = True) -> CN:
    """detectron2 config + NASNet keys + ``config_file`` + ``KEY VALUE`` ``opts``, validated.

    Every mistake raises one ConfigError naming where it came from (the file or the command
    line), the key and the value: an unknown key (with the closest existing one), a value of the
    wrong type, a value out of range (SOLVER.MAX_ITER <= 0, SOLVER.BASE_LR < 0,
    SOLVER.IMS_PER_BATCH < 1, a malformed INPUT.FIXED_SIZE_*), an odd number of override items.
    MODEL.DEVICE falls back to "cpu" (with a log line) when CUDA is asked for but absent, because
    detectron2's default is "cuda" and every shipped config should run on a laptop.
    """
    import torch
    from detectron2.config import get_cfg

    cfg = add_nasnet_config(get_cfg())
    if config_file:
        _merge_file(cfg, config_file)
    overridden = _merge_overrides(cfg, list(opts or []))
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("nasnet_det").warning("CUDA is not available: setting MODEL.DEVICE=cpu")
        cfg.MODEL.DEVICE = "cpu"

    def source_of(key: str) -> str:
        if key in overridden:
            return "command-line override"
        return f"config file {config_file!r}" if config_file else "the default"

    _validate(cfg, source_of)
    if freeze:
        cfg.freeze()
    return cfg
