"""Install a working detectron2 into the current Python environment, unless one is already there.

Why this exists: detectron2 is not on PyPI under its own name. A user with an upstream build (any
version, including current main) keeps it untouched. Otherwise the only registry route is the sdist
``pb1-detectron2==0.6``, which is upstream v0.6 *without* ``detectron2/layers/csrc``, so its setup.py
cannot build the compiled ops and a plain ``pip install`` fails. We unpack that sdist and apply the
same kind of small source patches that distributions (conda-forge, nixpkgs) apply to the v0.6 tag:

* no compiled extension (rotated boxes, deformable conv, fast COCOeval are then unavailable; the
  runtime compatibility layer ``nasnet_det.detection.compat`` turns any use of them into a clear error);
* the numpy aliases removed in numpy 1.24 (``np.int``, ``np.bool``, ...) become builtins
  (upstream 027099d3 / 857d5de2);
* ``Image.LINEAR`` (removed in Pillow 10) becomes ``Image.BILINEAR`` (upstream ff53992b);
* the exact ``black==21.4b2`` pin, used only by LazyConfig.save, is relaxed so it cannot fight other pins.

Usage: ``python tools/install_detectron2.py [--force]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"
_NUMPY_ALIASES = re.compile(r"\bnp\.(int|bool|float|str)\b(?!_|\d)")


def detectron2_present() -> bool:
    """True when ``import detectron2`` would find a package (a user build or a previous install)."""
    return importlib.util.find_spec("detectron2") is not None


def _pip(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", *args])


def patch_source_tree(root: Path) -> None:
    """Apply the pure-Python patches described in the module docstring to an unpacked sdist."""
    setup_py = root / "setup.py"
    text = setup_py.read_text()
    if "ext_modules=get_extensions()" not in text:
        raise RuntimeError(f"{setup_py}: unexpected layout, 'ext_modules=get_extensions()' not found")
    text = text.replace("ext_modules=get_extensions()", "ext_modules=[]")
    text = text.replace('"black==21.4b2"', '"black"')
    setup_py.write_text(text)
    for py in (root / "detectron2").rglob("*.py"):
        src = py.read_text()
        new = _NUMPY_ALIASES.sub(lambda m: m.group(1), src).replace("Image.LINEAR", "Image.BILINEAR")
        if new != src:
            py.write_text(new)


def install_from_registry() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "--no-deps", "--no-binary", ":all:", "-d", tmp, SDIST)
        (archive,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (root,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        patch_source_tree(root)
        # setup.py imports torch at module level, so the build must see the installed torch.
        _pip("install", "--no-build-isolation", str(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 is importable")
    args = parser.parse_args()
    if detectron2_present() and not args.force:
        print("detectron2 already installed; leaving it as it is")
        return
    install_from_registry()


if __name__ == "__main__":
    main()
