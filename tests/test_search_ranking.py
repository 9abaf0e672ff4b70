"""evaluate-ranking (Yu et al. 2019) and compare (searched vs random cells), on a tiny generated
ImageFolder (8x8 images with train/ and test/), a tiny weight-sharing search and inline children."""
from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from nasnet_det.errors import ConfigError, DataError
from nasnet_det.search import load_config, run_search
from nasnet_det.search.compare import compare_cells
from nasnet_det.search.data import check_dataset, load_child_data
from nasnet_det.search.driver import SearchError
from nasnet_det.search.ranking import evaluate_ranking, rank_correlations
from nasnet_det.search.report import write_report
from nasnet_det.search.trial_log import read_records
from nasnet_det.space import NASNET_A, Genotype

#: A tiny child (N=1, F=4, 8x8 images) trained inline: a training takes about a second.
CHILD = {"child.network.num_cells": "1", "child.network.num_conv_filters": "4", "child.batch_size": "16",
         "child.epochs": "1", "data.image_size": "8", "data.pad": "1", "executor.kind": "inline"}
TRAIN_PER_CLASS, TEST_PER_CLASS, CLASSES = 24, 6, ("ant", "bee", "cow")


def flat(d: dict[str, str]) -> list[str]:
    return [x for kv in d.items() for x in kv]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Class-coloured 8x8 noise images: learnable in one epoch, so accuracies differ between cells."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_cifar")
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                base = torch.tensor([200 if k == c else 40 for k in range(3)]).view(3, 1, 1)
                img = (base + torch.randint(-40, 40, (3, 8, 8), generator=gen)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def ws_search(tiny_data, tmp_path_factory) -> Path:
    """A finished weight-sharing search folder (1 epoch, 2 scored + 2 final proposals), with its report."""
    out = tmp_path_factory.mktemp("ws") / "search"
    opts = {**CHILD, "mode": "weight_sharing", "num_archs": "2", "weight_sharing.epochs": "1",
            "weight_sharing.final_archs": "2", "weight_sharing.eval_batch_size": "9", "ppo.batch_size": "2",
            "data.root": str(tiny_data), "data.val_size": "18"}
    run_search(load_config(None, flat(opts)), out)
    write_report(out, top_k=2, draw=False)
    return out


def brute_force_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-a from the pair counts (no ties in the test lists: tau-a = tau-b)."""
    signs = [math.copysign(1, (x[i] - x[j]) * (y[i] - y[j])) for i, j in itertools.combinations(range(len(x)), 2)]
    return sum(signs) / len(signs)


def spearman_from_ranks(x: list[float], y: list[float]) -> float:
    rank = lambda v: [sorted(v).index(a) + 1 for a in v]  # noqa: E731  (no ties)
    n = len(x)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rank(x), rank(y))) / (n * (n * n - 1))


def test_rank_correlations_match_a_hand_count_and_scipy():
    from scipy import stats

    x = [0.11, 0.42, 0.23, 0.55, 0.31, 0.07, 0.6]
    y = [0.2, 0.35, 0.1, 0.61, 0.52, 0.15, 0.4]
    got = rank_correlations(x, y)
    assert got["kendall_tau"] == pytest.approx(brute_force_tau(x, y)) == pytest.approx(11 / 21)
    assert got["spearman_rho"] == pytest.approx(spearman_from_ranks(x, y))
    assert got["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert got["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert rank_correlations(x, list(reversed(sorted(x))))["kendall_tau"] != 1.0
    assert rank_correlations(x, x)["kendall_tau"] == pytest.approx(1.0)
    assert rank_correlations(x, [0.5] * len(x))["kendall_tau"] is None  # undefined: written as null, not NaN


def test_eval_split_test_trains_on_every_training_image_and_evaluates_on_test(tiny_data, tmp_path):
    cfg = load_config(None, flat({**CHILD, "data.root": str(tiny_data), "data.val_size": "0",
                                  "data.eval_split": "test"}))
    check_dataset(cfg.data)
    data = load_child_data(cfg.data)
    assert len(data.train_x) == TRAIN_PER_CLASS * len(CLASSES)
    assert len(data.val_x) == TEST_PER_CLASS * len(CLASSES)
    assert data.val_y.tolist() == sorted(data.val_y.tolist())  # class folders in order: labels as in train/
    no_test = tmp_path / "no_test"
    shutil.copytree(tiny_data / "train", no_test / "train")
    bad = load_config(None, flat({**CHILD, "data.root": str(no_test), "data.val_size": "0",
                                  "data.eval_split": "test"}))
    with pytest.raises(DataError, match=r"data.eval_split: test, but .*no_test/test does not exist"):
        check_dataset(bad.data)
    with pytest.raises(ConfigError, match="data.val_size: 0 leaves no held-out images"):
        load_config(None, ["data.val_size", "0"])
    with pytest.raises(ConfigError, match="would train the controller on the test images"):
        load_config(None, ["mode", "weight_sharing", "num_archs", "20", "data.eval_split", "test"])


def test_evaluate_ranking_writes_k_entries_and_resumes_without_retraining(ws_search, tmp_path):
    out = tmp_path / "ranking"
    first = evaluate_ranking(ws_search, out, archs=3, epochs=1, seed=1)
    saved = json.loads((out / "ranking.json").read_text())
    assert saved == json.loads(json.dumps(first))
    assert saved["K"] == 3 and len(saved["architectures"]) == 3 and saved["trained"] == 3
    assert saved["budget"]["eval_images"] == 18 and saved["budget"]["epochs"] == 1
    assert (out / "ranking.png").stat().st_size > 0
    rows = saved["architectures"]
    assert len({json.dumps(r["genotype"]) for r in rows}) == 3
    for r in rows:
        assert 0.0 <= r["shared_accuracy"] <= 1.0 and 0.0 <= r["standalone_accuracy"] <= 1.0 and r["params"] > 0
        assert r["shared_accuracy"] * 18 == pytest.approx(round(r["shared_accuracy"] * 18))  # the whole split
    xs, ys = [r["shared_accuracy"] for r in rows], [r["standalone_accuracy"] for r in rows]
    assert saved["kendall_tau"] == rank_correlations(xs, ys)["kendall_tau"]
    finished = {r["trial_id"]: r for r in read_records(out / "trials.jsonl") if r["status"] == "ok"}

    with pytest.raises(SearchError, match="already holds a search"):
        evaluate_ranking(ws_search, out, archs=4, epochs=1, seed=1)
    with pytest.raises(SearchError, match="child.epochs was 1 .* the command gives 2"):
        evaluate_ranking(ws_search, out, archs=4, epochs=2, seed=1, resume=True)
    with pytest.raises(SearchError, match="seed was 1 .* the command gives 2"):  # another draw of cells
        evaluate_ranking(ws_search, out, archs=4, epochs=1, seed=2, resume=True)
    second = evaluate_ranking(ws_search, out, archs=4, epochs=1, seed=1, resume=True)
    assert len(second["architectures"]) == 4 and second["trained"] == 4
    records = read_records(out / "trials.jsonl")
    assert [r["trial_id"] for r in records if r["status"] == "running"] == [0, 1, 2, 3]  # each trained once
    assert {r["trial_id"]: r for r in records if r["status"] == "ok" and r["trial_id"] < 3} == finished
    assert [r["shared_accuracy"] for r in second["architectures"][:3]] == xs  # same draw, same scores


def test_compare_reports_the_mean_and_std_of_its_logged_trainings(ws_search, tiny_data, tmp_path):
    cfg_file = tmp_path / "child.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"root": str(tiny_data)}}))
    out = tmp_path / "compare"
    result = compare_cells(cfg_file, out, [f"searched={ws_search / 'best_genotype.json'}", "nasnet_a"],
                           random_cells=2, seeds=2, overrides=flat(CHILD))
    saved = json.loads((out / "compare.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [c["label"] for c in saved["cells"]] == ["searched", "nasnet_a", "random1", "random2"]
    assert saved["budget"]["train_images"] == TRAIN_PER_CLASS * len(CLASSES)  # every training image
    assert saved["budget"]["eval_images"] == TEST_PER_CLASS * len(CLASSES)  # the test folder

    ok = [r for r in read_records(out / "trials.jsonl") if r["status"] == "ok"]
    assert len(ok) == 8
    for cell in saved["cells"]:
        logged = sorted((r for r in ok if r["info"]["label"] == cell["label"]), key=lambda r: r["info"]["seed_index"])
        accs = [r["reward"] for r in logged]
        assert cell["accuracies"] == accs
        assert cell["mean"] == pytest.approx(statistics.fmean(accs))
        assert cell["std"] == pytest.approx(statistics.stdev(accs))
        assert cell["params"] == logged[0]["params"] > 0 and cell["macs"] == logged[0]["macs"] > 0
    for s in range(2):  # seed s is the same child seed for every cell
        assert len({r["seed"] for r in ok if r["info"]["seed_index"] == s}) == 1
    nasnet = next(r for r in ok if r["info"]["label"] == "nasnet_a")
    trained = Genotype.from_dict(nasnet["genotype"])
    assert (trained.normal, trained.reduce) == (NASNET_A.normal, NASNET_A.reduce)  # its own concat, h_{i-1} too

    md = (out / "compare.md").read_text()
    assert saved["verdict"] in md and saved["verdict"].startswith("searched (")
    assert "at least as good as the best random cell" in saved["verdict"]
    best_random = max((c for c in saved["cells"] if c["kind"] == "random"), key=lambda c: c["mean"])
    assert best_random["label"] in saved["verdict"]
    assert ("NOT" in saved["verdict"]) == (saved["cells"][0]["mean"] < best_random["mean"])

    again = compare_cells(cfg_file, out, [f"searched={ws_search / 'best_genotype.json'}", "nasnet_a"],
                          random_cells=2, seeds=2, overrides=flat(CHILD), resume=True)
    assert again["cells"] == result["cells"]
    assert sum(r["status"] == "running" for r in read_records(out / "trials.jsonl")) == 8  # nothing retrained
    with pytest.raises(SearchError, match="trial 0 is cell 'searched' .* now puts cell 'nasnet_a'"):
        compare_cells(cfg_file, out, ["nasnet_a"], random_cells=2, seeds=2, overrides=flat(CHILD), resume=True)


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_inputs_are_one_error_line(ws_search, tiny_data, tmp_path, load_tool, capsys):
    tool = load_tool("search")
    no_bank = tmp_path / "no_bank"
    shutil.copytree(ws_search, no_bank, ignore=shutil.ignore_patterns("supernet.safetensors", ".lock"))
    cases = [
        (["evaluate-ranking", "--search", str(no_bank), "--output", str(tmp_path / "r1"), "--epochs", "1"],
         "supernet.safetensors: not found"),
        (["evaluate-ranking", "--search", str(ws_search), "--output", str(tmp_path / "r2"), "--epochs", "1",
          "--archs", "2"], "--archs: 2; a rank correlation needs at least 3"),
        (["evaluate-ranking", "--search", str(ws_search), "--output", str(tmp_path / "r3"), "--epochs", "1",
          "child.network.num_conv_filters", "8"], "child.network: the shared weights"),
        (["compare", "--config-file", str(tmp_path / "none.yaml"), "--output", str(tmp_path / "c1"),
          "--genotype", "nasnet_z"], "--genotype='nasnet_z': unknown genotype name 'nasnet_z'"),
        (["compare", "--config-file", str(tmp_path / "none.yaml"), "--output", str(tmp_path / "c2"),
          "--genotype", "nasnet_a", "--genotype", "nasnet_a"], "label 'nasnet_a' is given twice"),
    ]
    for argv, message in cases:
        assert tool.main(argv) == 2, argv
        assert message in _error_line(capsys.readouterr().err)
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3", "c1", "c2"))


def test_retrain_after_a_weight_sharing_search_trains_each_logged_cell_from_scratch(ws_search, tmp_path):
    """retrain of a weight-sharing folder: multi-trial children of the exact logged genotypes."""
    from nasnet_det.search.report import load_trials, top_trials
    from nasnet_det.search.retrain import retrain_top

    out = retrain_top(ws_search, tmp_path / "retrain", top_k=2, overrides=["executor.kind", "inline"])
    top = top_trials(load_trials(ws_search), 2)
    trained = sorted(load_trials(tmp_path / "retrain"), key=lambda t: t.trial_id)
    assert out["summary"].ok == 2 and out["winner"]["epochs"] == 1  # the search's child.epochs
    assert yaml.safe_load((tmp_path / "retrain" / "config.yaml").read_text())["mode"] == "multi_trial"
    assert [Genotype.from_dict(t.genotype) for t in trained] == [Genotype.from_dict(t.genotype) for t in top]
    assert all(t.worker != "weight_sharing" and "search_trial" in t.info for t in trained)
    assert out["winner"]["search_trial"] in {t.trial_id for t in top}
