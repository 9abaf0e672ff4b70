"""Shared pytest helpers.

``shared_data`` gives the path of the shared data folder (``../shared/data`` next to the
repository, or ``$NASNET_SHARED_DATA``) and skips the test with a clear reason when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
