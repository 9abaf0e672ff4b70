"""Shared pytest helpers.

Torch runs on ONE thread for the whole session: on a small shared CPU (CI has 2 cores) OpenMP
threads that spin against each other make these small convolutions several times slower.

``shared_data`` gives the path of the shared data folder (``../shared/data`` next to the
repository, or ``$NASNET_SHARED_DATA``) and skips the test with a clear reason when it is absent.

``load_tool`` gives a function that loads a command-line script ``tools/<name>.py`` as a module.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import types
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

_tool_loads = itertools.count()


def load_tool(name: str) -> types.ModuleType:
    """Load ``tools/<name>.py`` by path, execute it and return the fresh module.

    Tools are loaded by path because ``tools/`` is not a package (nothing imports it; the scripts
    are what users run, so the tests exercise those very files). Each call executes the script
    again under a unique module name, registered in ``sys.modules``: dataclasses look their module
    up there while the class is created, and the registration is harmless otherwise.
    """
    path = REPO_ROOT / "tools" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no tool script {path}")
    module_name = f"nasnet_det_tools_{name}_{next(_tool_loads)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


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


@pytest.fixture(name="load_tool", scope="session")
def load_tool_fixture():
    """The :func:`load_tool` function: ``load_tool("demo")`` returns the loaded ``tools/demo.py``."""
    return load_tool


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
