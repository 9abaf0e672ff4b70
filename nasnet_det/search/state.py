"""The strategy's saved state: safe by construction (safetensors for tensors, JSON for the rest).

Why not ``torch.save``: unpickling runs whatever code the file names, so a planted
``strategy_state.pt`` would run on ``--resume``. Here the file is one safetensors file whose
metadata holds the JSON of everything that is not a tensor; tensors are replaced in the JSON by
``{"__tensor__": key}``. Reading it never executes anything. It is written with one atomic write,
so a crash mid-save leaves the previous state, never a torn one.

States written by older versions (``strategy_state.pt``, a pickle) are read only with
``torch.load(weights_only=True)``; a file that needs more is refused, naming the file and
``--allow-unsafe-pickle``, the one explicit way out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..durable import atomic_write_bytes
from ..errors import StateError

STATE_NAME = "strategy_state.safetensors"
LEGACY_STATE_NAME = "strategy_state.pt"
_META_KEY = "nasnet_det.strategy_state"


def _encode(obj: Any, tensors: dict[str, Any]) -> Any:
    """JSON-able copy of ``obj``; tensors move into ``tensors``. Tuples and dicts with non-string keys
    (an optimizer's per-parameter state) are tagged so that they come back as they were."""
    import torch

    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"strategy state: cannot save a {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"__tensor__"}:
        return tensors[obj["__tensor__"]]
    if set(obj) == {"__items__"}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    if set(obj) == {"__tuple__"}:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (nested dicts, lists, tuples, numbers, strings, tensors) atomically to ``path``."""
    from safetensors.torch import save

    tensors: dict[str, Any] = {}
    meta = json.dumps(_encode(state, tensors))
    atomic_write_bytes(path, save(tensors, metadata={_META_KEY: meta}))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state`; any damage is one ``StateError`` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta is None:
            raise ValueError("no strategy state in its metadata")
        return _decode(json.loads(meta), tensors)
    except Exception as err:  # noqa: BLE001 - safetensors raises several types; named, then stop
        raise StateError(f"{path}: cannot read the saved strategy state ({_first_line(err)}); delete it to "
                         f"rebuild the strategy from the trial log") from None


def load_legacy_state(path: str | Path, allow_unsafe_pickle: bool = False) -> dict[str, Any]:
    """A ``strategy_state.pt`` of an older version: ``weights_only=True`` unless explicitly allowed."""
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except Exception as err:  # noqa: BLE001 - refused or damaged: either way nothing ran
        raise StateError(f"{path}: refused to load the saved strategy state with torch.load(weights_only=True) "
                         f"({_first_line(err)}); it may run code when unpickled. Delete it to rebuild the "
                         f"strategy from the trial log, or pass --allow-unsafe-pickle if you trust the "
                         f"file") from None
    if not isinstance(state, dict):
        raise StateError(f"{path}: not a strategy state (a {type(state).__name__}); delete it to rebuild "
                         f"the strategy from the trial log")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
