"""Bad inputs to tools/pretrain.py: one ``error:`` line, exit 2, no traceback, nothing written.

Each case runs the real script in a subprocess on tiny generated ImageFolder data (the fixtures
of test_pretrain_run.py) and snapshots the output folder before and after: a failed run must
leave an earlier run's files byte-for-byte as they were, and create no folder where none was.
The one file a run may add is the lock file of a folder it owned (``durable.LOCK_NAME``): the crafted
checkpoint case is refused while resuming, which happens under the lock.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pretrain_run import ROOT, _tiny_config, _write

from nasnet_det.durable import LOCK_NAME, OutputLock
from nasnet_det.errors import GenotypeError
from nasnet_det.pretrain import load_config, run_pretraining
from nasnet_det.space import NASNET_A, resolve_genotype

# the synthetic_folder fixture comes from test_pretrain_run.py
pytest_plugins = ["test_pretrain_run"]

MARKER = "pwned.txt"


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def _fails_cleanly(cfg: dict, tmp_path: Path, *overrides: str, unchanged: bool = True) -> str:
    """Run the CLI; assert exit 2, one ``error:`` line, no traceback, the output folder unchanged."""
    out = Path(cfg["train"]["output_dir"])
    before = _snapshot(out)
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "pretrain.py"), "--config-file",
                           str(_write(cfg, tmp_path / "run.yaml")), *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    if unchanged:
        assert _snapshot(out) == before, "a failed run changed the output folder"
    return errors[0]


@pytest.fixture()
def earlier_run(tmp_path) -> Path:
    """An output folder holding an earlier run's files (their content does not matter here)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"earlier": "run"}\n')
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 2.0}\n')
    return out


def _folder(root: Path, source: Path, classes: dict[str, int]) -> Path:
    """An ImageFolder at ``root`` with ``n`` images per class name, copied from ``source``'s class_0."""
    images = sorted((source / "train" / "class_0").iterdir())
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for image in images[:n]:
            shutil.copy(image, root / name / image.name)
    return root


@pytest.mark.parametrize("overrides, expect", [
    (["optim.lr", "-0.1"], "error: optim.lr: must be > 0, got -0.1"),
    (["optim.lr", "0"], "error: optim.lr: must be > 0, got 0.0"),
    (["train.max_steps", "-3"], "error: train.max_steps: must be >= 1 (or 0: train for train.epochs), got -3"),
    (["model.arch", "nasnet_a_mobil"],
     "error: model.arch: unknown model 'nasnet_a_mobil' (did you mean 'nasnet_a_mobile'?)"),
    (["model.overrides.drop_path_keep", "0.5"],
     "error: model.overrides.drop_path_keep: unknown NASNetConfig field(s) ['drop_path_keep'] (did you mean"),
    (["model.num_classes", "2"], "error: model.num_classes=2, but data.train_dir"),
])
def test_bad_values_on_an_earlier_run_folder(synthetic_folder, earlier_run, tmp_path, overrides, expect):
    line = _fails_cleanly(_tiny_config(synthetic_folder, earlier_run), tmp_path, *overrides)
    assert line.startswith(expect), line


def test_bad_value_on_a_new_folder_creates_nothing(synthetic_folder, tmp_path):
    out = tmp_path / "new_run"
    _fails_cleanly(_tiny_config(synthetic_folder, out), tmp_path, "optim.lr", "-1")
    assert not out.exists()


def _bad_genotypes(tmp_path: Path) -> dict[str, Path]:
    good = NASNET_A.to_dict()
    op_list, combine_dict = copy.deepcopy(good), copy.deepcopy(good)
    op_list["normal"]["blocks"][0]["ops"][0] = ["sep_conv_3x3"]
    combine_dict["reduce"]["blocks"][2]["combine"] = {"add": 1}
    files = {"binary": b"\x89PNG\r\n\x1a\n\xff\xfe" * 10, "op_list": json.dumps(op_list).encode(),
             "combine_dict": json.dumps(combine_dict).encode(),
             "deep": b'{"normal": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("kind", ["binary", "op_list", "combine_dict", "deep"])
def test_bad_genotype_is_the_detection_error_line_and_keeps_config_json(synthetic_folder, earlier_run, tmp_path,
                                                                          kind):
    path = _bad_genotypes(tmp_path)[kind]
    with pytest.raises(GenotypeError) as expected:  # what detection reports, after its key
        resolve_genotype(str(path))
    line = _fails_cleanly(_tiny_config(synthetic_folder, earlier_run), tmp_path, "model.genotype", str(path))
    assert line == f"error: model.overrides.genotype={str(path)!r}: {expected.value}"
    assert (earlier_run / "config.json").read_text() == '{"earlier": "run"}\n'


@pytest.mark.parametrize("layout, expect", [
    ("one_class", "has 1 class folder ('only'); a classifier needs at least 2 classes"),
    ("empty_class", "class folder"),
    ("val_classes_differ", "has other class folders than data.train_dir"),
])
def test_bad_class_layouts(synthetic_folder, earlier_run, tmp_path, layout, expect):
    train, val = tmp_path / "data" / "train", tmp_path / "data" / "val"
    if layout == "one_class":
        _folder(train, synthetic_folder, {"only": 12})
        _folder(val, synthetic_folder, {"only": 4})
    elif layout == "empty_class":
        _folder(train, synthetic_folder, {"a": 12, "b": 12, "c": 0})
        _folder(val, synthetic_folder, {"a": 4, "b": 4, "c": 4})
    else:
        _folder(train, synthetic_folder, {"a": 12, "b": 12})
        _folder(val, synthetic_folder, {"a": 4, "x": 4})
    line = _fails_cleanly(_tiny_config(tmp_path / "data", earlier_run), tmp_path)
    assert expect in line, line
    if layout == "empty_class":
        assert f"{str(train / 'c')!r} has no images" in line
    if layout == "val_classes_differ":
        assert "missing: ['b'], extra: ['x']" in line


def test_corrupt_image_in_a_loader_worker_is_one_line(synthetic_folder, tmp_path):
    """Found while training (images are decoded lazily), in a worker process: still one line."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_folder, data)
    bad = sorted((data / "train" / "class_1").iterdir())[0]
    bad.write_bytes(b"not an image")
    cfg = _tiny_config(data, tmp_path / "out", data={"workers": 1})
    line = _fails_cleanly(cfg, tmp_path, unchanged=False)
    assert line.startswith(f"error: cannot read image {str(bad)!r}"), line


def test_second_run_on_a_locked_folder_refuses(synthetic_folder, earlier_run, tmp_path):
    with OutputLock(earlier_run, "pretraining"):
        before = _snapshot(earlier_run)
        line = _fails_cleanly(_tiny_config(synthetic_folder, earlier_run), tmp_path)
        assert _snapshot(earlier_run) == before
    assert line.startswith(f"error: output folder {str(earlier_run)!r} is in use by a running pretraining (pid ")


class _MarkerPayload:
    """Unpickling this writes a marker file: the proof that a loader ran attacker code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("ran",))


def test_crafted_checkpoint_is_refused_without_running_its_code(synthetic_folder, earlier_run, tmp_path):
    marker = tmp_path / MARKER
    torch.save({"model": {}, "step": 2, "x": _MarkerPayload(str(marker))}, earlier_run / "checkpoint_step00000002.pth")
    line = _fails_cleanly(_tiny_config(synthetic_folder, earlier_run), tmp_path)
    assert not marker.exists(), "the crafted checkpoint ran its code"
    assert "refused to load training checkpoint" in line and "--allow-unsafe-pickle" in line


def test_resume_rewinds_metrics_to_the_checkpoint(synthetic_folder, tmp_path):
    """Steps logged after the last checkpoint (and a torn last line) are not kept twice on resume."""
    out = tmp_path / "run"
    cfg = load_config(_write(_tiny_config(synthetic_folder, out, train={
        "output_dir": str(out), "max_steps": 4, "batch_size": 8, "checkpoint_every_steps": 2, "keep_checkpoints": 10,
        "threads": 1, "progress_bar": False, "tensorboard": False, "log_every_steps": 1,
        "eval_every_epochs": 100}), tmp_path / "r.yaml"))
    run_pretraining(cfg)
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (out / "checkpoint_step00000004.pth").unlink()  # as if killed after logging step 4, before its checkpoint
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    run_pretraining(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [1, 2, 3, 4]
    assert [r["kind"] for r in records].count("summary") == 1
    assert records[:2] == first[:2], "records up to the checkpoint are kept as they were"
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
