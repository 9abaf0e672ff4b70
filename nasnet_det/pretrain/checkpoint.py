"""Training checkpoints: everything an exact resume needs, written atomically, read safely.

Why atomic: a run killed while writing must leave the previous checkpoint intact, so every file
goes through ``nasnet_det.durable.atomic_write`` (temporary file, fsync, rename, folder fsync).
Why only tensors and plain Python values: the file then loads with
``torch.load(weights_only=True)``, the safe loader, so resuming never executes pickled code. A file
that needs more (a crafted or foreign pickle) is refused; pretraining has no
``--allow-unsafe-pickle`` way out because its own checkpoints never need one. Contents: model,
optimizer, EMA, AMP scaler, the step (the schedule and the sampler position are pure functions of
it and the config), and every RNG stream of every rank.
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..durable import atomic_write
from ..errors import WeightsError
from ..modeling.state_check import state_dict_mismatch

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_step(\d+)\.pth$")


class CheckpointError(WeightsError):
    """A checkpoint that cannot be used: unreadable, truncated, or for another model."""


def rng_state() -> dict:
    """This process's RNG streams (torch CPU, CUDA, numpy, Python) as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_plain(state):
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_s = state["numpy"]
    np.random.set_state(("MT19937", np_s["key"].numpy().astype(np.uint32), np_s["pos"], np_s["has_gauss"],
                         np_s["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / f"checkpoint_step{step:08d}.pth"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), out / f) for f in os.listdir(out) if (m := CHECKPOINT_PATTERN.match(f))]
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(state: dict, output_dir: str | os.PathLike, step: int, keep: int = 2) -> Path:
    """Write ``checkpoint_step<step>.pth`` atomically and keep only the newest ``keep`` files."""
    path = checkpoint_path(output_dir, step)
    with atomic_write(path) as f:
        torch.save(state, f)
    if keep > 0:
        for _, old in list_checkpoints(output_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint with the safe loader; one clear error for any bad file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise _unreadable(p, err) from None
        raise CheckpointError(
            f"refused to load training checkpoint {str(p)!r}: it holds pickled objects beyond tensors and "
            "plain values, which the safe loader (torch.load weights_only=True) does not run; nasnet_det.pretrain "
            "never writes such files. Pretraining has no --allow-unsafe-pickle: delete or move the file "
            "(train.resume=auto then takes the previous checkpoint)") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file
        raise _unreadable(p, err) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{str(p)!r} is not a nasnet_det training checkpoint (no 'model'/'step' entries)")
    return state


def _unreadable(p: Path, err: Exception) -> CheckpointError:
    first_line = str(err).splitlines()[0] if str(err) else ""
    return CheckpointError(f"cannot read training checkpoint {str(p)!r} (truncated, corrupt, or not written by "
                           f"nasnet_det.pretrain): {type(err).__name__}: {first_line}")


def load_model_state_strict(model: torch.nn.Module, state: dict, what: str) -> None:
    """``load_state_dict`` with a one-paragraph error when the architecture differs."""
    problem = state_dict_mismatch(model, state)
    if problem:
        raise CheckpointError(f"{what} was written for a different architecture: {problem}. "
                              "Check model.name / genotype / num_cells / penultimate_filters / num_classes.")
    model.load_state_dict(state)
