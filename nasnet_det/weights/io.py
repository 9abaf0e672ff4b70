"""Our weights format (safetensors + metadata) and safe loading of every format we accept.

Why safetensors: a ``.pth`` is a pickle, and unpickling a file from the internet can run arbitrary
code. safetensors holds raw tensors and a string->string metadata header, so we record there what
a file needs to be used correctly: the genotype (JSON), the network config, the number of cells,
the filters, where the weights came from, and a SHA-256 of the tensor contents (checked on load,
so a corrupted file is caught even when its header parses).

Loading rules (``load_state_dict``):
- ``.safetensors``: read with safetensors; header/length problems -> WeightsError.
- ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``: ``torch.load(weights_only=True)``; a pickle that needs
  more than tensors and plain containers is REFUSED unless ``allow_unsafe_pickle=True``.
- ``.pkl`` (detectron2 / Caffe2 style: dicts of numpy arrays): a restricted unpickler that only
  knows numpy arrays and plain containers; anything else refused, same flag.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ..modeling.state_check import state_dict_mismatch
from ..errors import UnsafeFileError, WeightsError

FORMAT_VERSION = "1"
UNSAFE_FLAG_HINT = ("Only if you trust where this file came from, pass --allow-unsafe-pickle "
                    "(Python: allow_unsafe_pickle=True).")


# ---------------------------------------------------------------------------------------------
# hashing and metadata
# ---------------------------------------------------------------------------------------------
def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor in name order: format-independent."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_metadata(model: torch.nn.Module | None) -> dict[str, str]:
    """What a weights file must say about the network it fits (all values are strings)."""
    if model is None:
        return {}
    meta: dict[str, str] = {}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        cfg = config.to_dict()
        meta["genotype"] = json.dumps(cfg.pop("genotype"), sort_keys=True)
        meta["nasnet_config"] = json.dumps(cfg, sort_keys=True, default=str)
        meta["num_cells"] = str(cfg.get("num_cells"))
        meta["num_conv_filters"] = str(cfg.get("num_conv_filters"))
        meta["num_classes"] = str(cfg.get("num_classes"))
        meta["dataset"] = str(cfg.get("dataset"))
    if hasattr(model, "cell_names"):
        meta["cell_names"] = json.dumps(list(model.cell_names))
    return meta


# ---------------------------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------------------------
def save_weights(state: Mapping[str, torch.Tensor], path: str | os.PathLike, model: torch.nn.Module | None = None,
                 source: str = "", extra: Mapping[str, str] | None = None) -> Path:
    """Write ``state`` as safetensors with metadata; returns the path. Written atomically."""
    from safetensors.torch import save

    from ..durable import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{str(path)!r}: our weights files end in .safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": "nasnet_det", "format_version": FORMAT_VERSION, "source": source,
            "sha256": tensors_sha256(tensors)}
    meta.update(model_metadata(model))
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    # through the project's one atomic writer: tmp + fsync + rename, and the mode a plain open()
    # gives (safetensors' own save_file leaves 0600, unreadable to the people a file is shared with)
    return atomic_write_bytes(path, save(tensors, metadata=meta))


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists of numpy arrays and plain values; refuses every other global."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol-5 arrays
        ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError...
        raise WeightsError(f"cannot read {str(path)!r} as safetensors (truncated or corrupt file?): "
                           f"{_first_line(err)}") from None
    expected = meta.get("sha256")
    if expected and tensors_sha256(state) != expected:
        raise WeightsError(f"{str(path)!r}: tensor contents do not match the sha256 in its metadata "
                           "(the file is corrupt or was modified)")
    return state, meta


#: What to do about a weights file that cannot be read, for every message that says so.
WEIGHTS_FILE_HINT = ("give a checkpoint saved by train_net.py / pretrain.py, or one converted by "
                     "tools/convert_weights.py (copy it again if it was cut short)")


def safe_torch_load(path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> Any:
    """``torch.load(weights_only=True)``; a pickle that needs more is refused naming the flag."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        # Legacy (non-zip) torch files are plain pickles; torch.load handles them too.
        with open(path, "rb") as f:
            head = f.read(2)
        if not head or head[0] != 0x80:
            raise WeightsError(f"{str(path)!r} is not a PyTorch file (truncated or corrupt: no zip archive "
                               f"and no pickle header); {WEIGHTS_FILE_HINT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe_pickle:
            raise UnsafeFileError(
                f"{str(path)!r} is a pickle that needs more than tensors to load ({_first_line(err)[:200]}); "
                f"loading it could run arbitrary code, so it was refused. {UNSAFE_FLAG_HINT}") from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated zip, bad storage...
        raise WeightsError(f"cannot read {str(path)!r} (truncated or corrupt file?): {_first_line(err)}; "
                           f"{WEIGHTS_FILE_HINT}") from None
    return obj


def safe_unpickle(path: Path, allow_unsafe_pickle: bool = False) -> Any:
    """Unpickle a detectron2 / Caffe2 style ``.pkl`` (dicts of numpy arrays) without running code.

    Any global besides numpy arrays and plain containers is refused with one WeightsError naming
    ``--allow-unsafe-pickle``, the one explicit way out.
    """
    raw = Path(path).read_bytes()
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "is not allowed" in str(err) and not allow_unsafe_pickle:
            raise UnsafeFileError(f"{str(path)!r} is a pickle with arbitrary objects ({err}); loading it could "
                               f"run arbitrary code, so it was refused. {UNSAFE_FLAG_HINT}") from None
        if "is not allowed" in str(err):
            return pickle.loads(raw, encoding="latin1")
        raise WeightsError(f"cannot read {str(path)!r} (truncated or corrupt pickle): {_first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - EOFError on truncation, etc.
        raise WeightsError(f"cannot read {str(path)!r} (truncated or corrupt pickle): {_first_line(err)}") from None


def _load_pkl(path: Path, allow_unsafe_pickle: bool) -> tuple[dict, dict]:
    import numpy as np

    obj = safe_unpickle(path, allow_unsafe_pickle)

    def to_tensor(v):
        return torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v

    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        meta = {k: str(v) for k, v in obj.items() if k != "model" and isinstance(v, (str, int, float, bool))}
        return {k: to_tensor(v) for k, v in obj["model"].items()}, meta
    if isinstance(obj, dict):
        return {k: to_tensor(v) for k, v in obj.items()}, {}
    raise WeightsError(f"{str(path)!r}: expected a dict of arrays, got {type(obj).__name__}")


def unwrap_state_dict(obj: Any, path: Path) -> dict:
    """Find the tensor dict inside common checkpoint wrappers (state_dict / model / ema)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_ema", "ema"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
            if key == "ema" and isinstance(inner, dict) and isinstance(inner.get("module"), dict):
                return inner["module"]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise WeightsError(f"{str(path)!r} holds no state dict (a mapping of names to tensors)")


def load_state_dict(path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` from any supported file, with one clear WeightsError on failure."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist")
    if p.stat().st_size == 0:
        raise WeightsError(f"weights file {str(p)!r} is empty")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(p)
    if suffix == ".pkl":
        state, meta = _load_pkl(p, allow_unsafe_pickle)
        return state, meta
    if suffix in (".pth", ".pt", ".bin", ".ckpt", ".tar"):
        return unwrap_state_dict(safe_torch_load(p, allow_unsafe_pickle), p), {}
    raise WeightsError(f"{str(p)!r}: unknown weights format {suffix!r} (expected .safetensors, .pth/.pt/.bin, .pkl)")


def check_architecture(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ONE WeightsError summarising every missing / unexpected / mis-shaped tensor."""
    problem = state_dict_mismatch(model, state)
    own_aux = [k for k in model.state_dict() if k.startswith("aux_head.")]
    if problem and own_aux and not any(k.startswith("aux_head.") for k in state) \
            and not state_dict_mismatch(model, {**state, **{k: model.state_dict()[k] for k in own_aux}}):
        raise WeightsError(f"{what} has no aux head but the model has one: build the model with "
                           "use_aux_head=False (e.g. create_model(name, use_aux_head=False)); the aux head "
                           "is only used in training")
    if problem:
        raise WeightsError(f"{what} does not fit this model (a different architecture?): {problem}. "
                           "Build the model with the genotype / num_cells / filters / num_classes "
                           "recorded in the file's metadata.")


def load_weights_into(model: torch.nn.Module, path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> dict:
    """Load a weights file into ``model`` (strict, with one clear error); returns the file's metadata."""
    state, meta = load_state_dict(path, allow_unsafe_pickle)
    check_architecture(model, state, f"weights file {str(path)!r}")
    model.load_state_dict(state)
    return meta
