"""Shared pytest helpers.

Torch runs on ONE thread for the whole session: on a small shared CPU (CI has 2 cores) OpenMP
threads that spin against each other make these small convolutions several times slower.

``shared_data`` gives the path of the shared data folder (``../shared/data`` next to the
repository, or ``$NASNET_SHARED_DATA``) and skips the test with a clear reason when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path | None:
    """The shared data folder, or None when it does not exist."""
    env = os.environ.get("NASNET_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips when it is missing."""
    path = shared_data_path()
    if path is None:
        pytest.skip(f"shared data folder not found ({REPO_ROOT.parent / 'shared' / 'data'}; "
                    "set NASNET_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
