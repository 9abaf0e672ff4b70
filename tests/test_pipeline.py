"""tools/run_pipeline.py: the stage bookkeeping (fast), and the whole chain at a tiny budget (slow)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nasnet_det.errors import ConfigError, StateError
from nasnet_det.pipeline import load_config
from nasnet_det.pipeline.ledger import Ledger
from nasnet_det.pipeline.report import COLUMNS, LABELS, fmt, search_warnings, warnings
from nasnet_det.pipeline.runner import _step, check_folder

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10"
TINY = ["search.opts",
        "[num_archs, 2, weight_sharing.epochs, 1, weight_sharing.final_archs, 2, ppo.batch_size, 2, "
        "data.train_size, 200, data.val_size, 100, child.network.num_cells, 1, child.network.num_conv_filters, 8]",
        "pretrain.max_steps", "5", "data.train_per_class", "20", "data.test_per_class", "10",
        "detect.max_iter", "2", "detect.num_train", "16", "detect.num_val", "8",
        "detect.opts", "[SOLVER.IMS_PER_BATCH, 2, SOLVER.WARMUP_ITERS, 1]"]


def test_finished_step_is_skipped_and_running_step_is_started_again(tmp_path):
    calls = []
    ledger = Ledger(tmp_path)
    _step(ledger, "a", lambda: calls.append("a") or {"x": 1}, lambda _: None)

    def killed():
        calls.append("b")
        raise KeyboardInterrupt  # stands for a kill in the middle of the step
    with pytest.raises(KeyboardInterrupt):
        _step(ledger, "b", killed, lambda _: None)
    again = Ledger(tmp_path)  # what a rerun reads from disk
    assert again.done("a") and again.get("a")["x"] == 1
    assert again.get("b")["status"] == "running"
    _step(again, "a", lambda: calls.append("a2") or {}, lambda _: None)
    _step(again, "b", lambda: calls.append("b2") or {}, lambda _: None)
    assert calls == ["a", "b", "b2"]
    assert Ledger(tmp_path).get("b")["attempts"] == 2 and Ledger(tmp_path).done("b")


def test_rerun_needs_resume_and_the_same_config(tmp_path):
    cfg = load_config(None, [])
    (tmp_path / "config.yaml").write_text("detect:\n  max_iter: 7\n")
    with pytest.raises(StateError, match="--resume"):
        check_folder(cfg, tmp_path, resume=False)
    with pytest.raises(ConfigError, match="detect.max_iter=7"):
        check_folder(cfg, tmp_path, resume=True)


def test_bad_override_is_one_error_line():
    r = subprocess.run([sys.executable, "tools/run_pipeline.py", "--print-config", "detect.max_itr", "3"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "did you mean 'detect.max_iter'" in r.stderr


def test_a_pretraining_at_chance_is_a_warning():
    """The full-budget run that ended at 10.0% top-1 for all three backbones must not pass unremarked."""
    def row(top1):
        return {"pretrain_top1": {"value": top1, "source": "m.jsonl", "field": "ema_top1"}}

    said = warnings({"searched": row(10.0), "nasnet_a": row(41.5), "random": row(11.9), "searched_scratch": {}})
    assert len(said) == 2 and "searched cell pretraining did not learn (top-1 10.0%" in said[0]
    assert "random cell" in said[1] and "logs/pretrain_random.log" in said[1]


def test_a_search_whose_shared_weights_stayed_at_chance_is_a_warning(tmp_path):
    """Run 3's search ended its passes at loss 4.39 against chance 2.30: the report must say its
    searched cell is in effect random; a search that learned, or a multi-trial one, says nothing."""
    (tmp_path / "search").mkdir()
    assert search_warnings(tmp_path) == []  # no epochs.json: a multi-trial search
    for loss, warned in ((4.39, True), (1.5, False)):
        (tmp_path / "search" / "epochs.json").write_text(json.dumps(
            [{"epoch": 0, "train_loss": 5.53, "chance_loss": 2.302585}, {"epoch": 1, "train_loss": loss,
                                                                         "chance_loss": 2.302585}]))
        said = search_warnings(tmp_path)
        assert bool(said) is warned
        if warned:
            assert len(said) == 1 and "shared weights did not learn (last training pass loss 4.39" in said[0]


def test_a_bad_transfer_scope_is_refused_before_any_stage_runs():
    with pytest.raises(ConfigError, match="detect.transfer: must be one of .*'backbone'.*got 'heads'"):
        load_config(None, ["detect.transfer", "heads"])


def test_no_data_says_how_to_get_it(tmp_path):
    r = subprocess.run([sys.executable, "tools/run_pipeline.py", "--output", str(tmp_path / "run"),
                        "data.root", str(tmp_path / "none"), "data.torchvision_root", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: no CIFAR-10") and "download=True" in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"needs the shared CIFAR-10 at {CIFAR}")
def test_tiny_pipeline_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "tools/run_pipeline.py", "--output", str(out), *TINY], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for path in ["search/top_genotypes.json", "genotypes/searched.json", "genotypes/random_seed0.json",
                 "report.md", "report.png", "summary.json", "stages.json"]:
        assert (out / path).is_file(), path
    assert list((out / "search" / "cells").glob("*.png"))
    for name in ("searched", "nasnet_a", "random"):
        assert (out / "pretrain" / name / "model_final.safetensors").is_file()
        assert (out / "export" / f"{name}.pkl").is_file()
    summary = json.loads((out / "summary.json").read_text())
    table = (out / "report.md").read_text()
    for row, cells in summary["rows"].items():
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {LABELS[row]} |"))
        shown = [c.strip() for c in line.strip("|").split("|")][1:]
        for (key, (_, decimals)), text in zip(COLUMNS.items(), shown):
            if key not in cells:
                assert text == "n/a"
                continue
            cell = cells[key]
            source = Path(cell["source"])
            if source.name == "metrics.jsonl":
                records = [json.loads(x) for x in source.read_text().splitlines()]
                value = [x for x in records if x.get("kind") == "summary"][-1]["ema_top1"]
            elif source.name == "stages.json":
                value = json.loads(source.read_text())["steps"][cell["field"][6:-len("].seconds")]]["seconds"]
            elif source.name == "top_genotypes.json":
                value = 100.0 * json.loads(source.read_text())[0]["reward"]
            else:
                value = json.loads(source.read_text())[cell["field"]]
            assert value == cell["value"] and text == fmt(value, decimals), (row, key)
    saved = (out / "detect" / "searched" / "train" / "config.yaml").read_text()
    assert summary["transfer"]["value"] == "backbone" and "TRANSFER: backbone" in saved
    assert "transfer: MODEL.NASNET.TRANSFER = backbone" in table
    again = subprocess.run([sys.executable, "tools/run_pipeline.py", "--output", str(out), "--resume", *TINY],
                           cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("skipped") == 12, again.stdout
