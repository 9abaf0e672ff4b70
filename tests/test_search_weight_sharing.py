"""Weight-sharing search: sub-networks are the stand-alone networks, costs are fvcore's, and a
SIGKILLed search resumes to exactly what the uninterrupted one produces."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasnet_det.errors import StateError
from nasnet_det.modeling import NASNet
from nasnet_det.search.config import child_network, load_config
from nasnet_det.search.cost import CostModel, count_macs
from nasnet_det.search.strategies import RandomSearch, space_of
from nasnet_det.search.supernet import SharedWeights

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"


def _space_and_base(num_cells: int = 1, filters: int = 8):
    cfg = load_config(None, ["child.network.num_cells", str(num_cells), "child.network.num_conv_filters", str(filters)])
    return space_of(cfg), child_network(cfg.child, num_classes=10, image_size=32), cfg


def _genotypes(space, n: int, seed: int = 0):
    rs = RandomSearch(space, seed)
    return [space.decode(rs.propose().decisions) for _ in range(n)]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)")


def _search_head_by_hand(bank: SharedWeights, net: NASNet, pooled: torch.Tensor) -> torch.Tensor:
    """The projection head written out: gather the last cell's slots, project, standardize over the
    batch, scale and shift, ReLU, linear."""
    from nasnet_det.search.supernet import state_slots

    w = {k.split("/", 1)[1]: v.detach().cpu() for k, v in bank.weights.items() if k.startswith("search_head/")}
    z = pooled @ w["proj"][:, state_slots(net.cells[-1])[1]].t()
    z = (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-3).sqrt() * w["bn/weight"] + w["bn/bias"]
    return z.clamp(min=0) @ w["fc/weight"].t() + w["fc/bias"]


@pytest.mark.parametrize("channels_last,device,head", [
    (False, "cpu", "classifier"), (True, "cpu", "classifier"), (True, "cpu", "projection"),
    pytest.param(True, "cuda", "projection", marks=CUDA)])
def test_subnetwork_equals_standalone_network_with_the_shared_weights(channels_last, device, head, monkeypatch):
    """The stand-alone network is plain NCHW on the CPU: the supernet's NHWC option and its device
    change speed, not values (up to float rounding; TF32 off so that a GPU computes in fp32). Under
    the projection head the sub-network is the stand-alone body (``num_classes=0``: pooled features)
    followed by the search head."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    space, base, _ = _space_and_base()
    bank = SharedWeights(base, channels_last=channels_last, device=device, head=head)
    genotypes = _genotypes(space, 4)
    assert any(b.combine == "concat" for g in genotypes for b in g.normal.blocks + g.reduce.blocks)
    x = torch.randn(4, 3, 32, 32, device=device)
    for g in genotypes:  # train the bank a little so the check is not about initial values
        bank.tensors(g)
        opt = torch.optim.SGD(bank.parameters(), lr=0.1)
        loss = bank(x, g).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (head == "projection") == any(k.startswith("search_head/") for k in bank.weights.keys())
    for g in genotypes:
        net = NASNet(base.replace(genotype=g, num_classes=0 if head == "projection" else base.num_classes))
        net.load_state_dict(bank.state_dict_for(g), strict=True)
        net.eval()
        with torch.no_grad():
            expected = net(x.cpu())
            if head == "projection":
                expected = _search_head_by_hand(bank, net, expected)
            got = bank(x, g, train=False)
        assert bank.network(g).child.channels_last_input is channels_last
        assert got.device.type == device and all(p.device.type == device for p in bank.parameters())
        assert got.shape == (4, 10)
        tol = 1e-5 if device == "cpu" else 1e-4  # cuDNN sums in its own order
        torch.testing.assert_close(got.cpu(), expected, rtol=tol, atol=tol)
        # the reported size is the stand-alone child's, NASNet classifier included
        assert bank.num_parameters(g) == sum(p.numel() for p in NASNet(base.replace(genotype=g)).parameters())
    saved = bank.bank_state()  # a saved bank is CPU tensors whatever the device, and loads back onto it
    assert all(t.device.type == "cpu" for t in saved["weights"].values())
    again = SharedWeights(base, channels_last=channels_last, device=device, head=head)
    again.load_bank_state(saved)
    assert all(p.device.type == device for p in again.parameters())
    with torch.no_grad():
        torch.testing.assert_close(again(x, genotypes[0], train=False), bank(x, genotypes[0], train=False))
    other = "classifier" if head == "projection" else "projection"
    with pytest.raises(StateError, match=f"trained with weight_sharing.head '{head}'.*use weight_sharing.head {head}"):
        SharedWeights(base, device=device, head=other).load_bank_state(saved)


def test_weight_sharing_refuses_a_missing_gpu_and_stops_on_a_diverged_loss(tmp_path, monkeypatch):
    """``child.device cuda`` without a GPU is the user's setting (one ConfigError naming the key);
    a non-finite training loss stops the pass with a StateError instead of saving a NaN bank."""
    from nasnet_det.errors import ConfigError, StateError
    from nasnet_det.search import weight_sharing
    from nasnet_det.search.weight_sharing import WeightSharingSearch, search_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert search_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="child.device: 'cuda'.*child.device cpu"):
        search_device("cuda")
    cfg = load_config(None, TINY[:-2] + ["data.root", str(_image_folder(tmp_path / "data")), "data.val_size", "30",
                                         "data.train_size", "60", "child.batch_size", "10"])
    search = WeightSharingSearch(cfg, tmp_path / "out")
    search._start_bank(None)
    monkeypatch.setattr(weight_sharing, "_CHECK_EVERY", 2)
    real = weight_sharing.F.cross_entropy
    calls = []

    def poisoned(logits, target):
        calls.append(1)
        return real(logits, target) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(weight_sharing.F, "cross_entropy", poisoned)
    with pytest.raises(StateError, match="diverged at epoch 0 by step 3 .*lower child.lr"):
        search.train_epoch(0)
    assert len(calls) == 4  # stopped at the first check after the bad step


def test_tensors_are_shared_by_role_and_not_across_roles():
    space, base, _ = _space_and_base()
    bank = SharedWeights(base)
    a, b = _genotypes(space, 2, seed=3)
    ka, kb = bank.keys(a), bank.keys(b)
    assert ka["conv0.conv.weight"] == kb["conv0.conv.weight"]  # the stem is in every architecture
    block_a, block_b = a.normal.blocks[0], b.normal.blocks[0]
    name = "cells.0.comb_iter_0_left"
    same_op = block_a.ops[0] == block_b.ops[0]  # the input state does not matter (ENAS)
    pa = {n: k for n, k in ka.items() if n.startswith(name)}
    pb = {n: k for n, k in kb.items() if n.startswith(name)}
    shared = [n for n in pa if n in pb and pa[n] == pb[n]]
    assert bool(shared) == same_op


def test_readers_of_a_cell_output_meet_each_state_in_its_own_slot():
    """The classifier reads the last cell's unused states, which differ between architectures. The
    columns for one state come from that state's slot of one bank tensor, wherever the state sits
    in the concat, and training through one architecture changes only the slots it reads (the
    NASNet classifier under ``head="classifier"``; the projection head gathers the same slots)."""
    space, base, _ = _space_and_base()
    bank = SharedWeights(base, head="classifier")

    def layout(g):
        last = bank.network(g)[0].cells[-1]
        return list(last.spec.concat), last.out_channels // len(last.spec.concat)

    gs = _genotypes(space, 80, seed=1)
    pair = next((a, b, s) for a in gs for b in gs for s in layout(a)[0]
                if s in layout(b)[0] and layout(a)[0].index(s) != layout(b)[0].index(s)
                and layout(a)[1] == layout(b)[1])
    a, b, state = pair
    (ca, width), (cb, _) = layout(a), layout(b)
    assert bank.keys(a)["classifier.weight"] == bank.keys(b)["classifier.weight"]
    wa, wb = bank.tensors(a)["classifier.weight"], bank.tensors(b)["classifier.weight"]
    ia, ib = ca.index(state), cb.index(state)
    torch.testing.assert_close(wa[:, ia * width:(ia + 1) * width], wb[:, ib * width:(ib + 1) * width])
    assert not torch.equal(wa[:, :width], wb[:, :width]) or ca[0] == cb[0]  # a leading slice would have matched

    bank.tensors(a)["classifier.weight"].sum().backward()
    grad = bank.weights[bank.keys(a)["classifier.weight"]].grad
    slot = 2 * bank.network(a)[0].cells[-1].filters
    touched = {s for s in range(grad.shape[1] // slot) if grad[:, s * slot:(s + 1) * slot].abs().sum() > 0}
    assert touched == set(ca)


def test_per_module_macs_equal_fvcore_on_the_whole_network():
    from fvcore.nn import FlopCountAnalysis

    space, base, _ = _space_and_base(num_cells=2)
    for g in _genotypes(space, 2, seed=5):
        net = NASNet(base.replace(genotype=g)).eval()
        whole = FlopCountAnalysis(net, torch.zeros(1, 3, 32, 32))
        whole.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        assert count_macs(base.replace(genotype=g), 32) == whole.total()


def test_cost_objective_and_hard_limit():
    _, base, _ = _space_and_base()
    cfg = load_config(None, ["cost.metric", "macs", "cost.target", "1000000", "cost.limit", "2000000"])
    cm = CostModel(cfg.cost, base, 32)
    assert cm.reward(0.5, 2_000_000) == pytest.approx(0.5 * 2 ** -0.07)
    assert cm.reward(0.5, 500_000) > 0.5
    assert cm.rejection(1_999_999.0) is None
    assert "cost.limit" in cm.rejection(2_000_001.0)


TINY = ["mode", "weight_sharing", "num_archs", "8", "weight_sharing.epochs", "2", "weight_sharing.final_archs", "4",
        "weight_sharing.eval_batch_size", "50", "ppo.batch_size", "3", "ppo.lr", "0.01", "child.batch_size", "50",
        "child.network.num_cells", "1", "child.network.num_conv_filters", "8", "data.train_size", "200",
        "data.val_size", "100", "data.root", str(CIFAR)]


def _search(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tools" / "search.py"),
           "--config-file", str(ROOT / "configs/search/cpu_demo.yaml"), "--output", str(out),
           "--no-progress", "--no-report", *extra, *TINY]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(out: Path) -> dict[int, tuple]:
    recs = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]
    done = [r for r in recs if r["status"] in ("ok", "failed", "rejected")]
    ids = [r["trial_id"] for r in done]
    assert len(ids) == len(set(ids)), "a trial finished twice"
    return {r["trial_id"]: (tuple(r["decisions"]), r["reward"]) for r in done}


@pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/data/cifar10 (real CIFAR-10)")
def test_sigkill_then_resume_equals_uninterrupted_search(tmp_path):
    ref = _search(tmp_path / "ref")
    _, err = ref.communicate(timeout=900)
    assert ref.returncode == 0, err
    killed_dir = tmp_path / "killed"
    proc = _search(killed_dir)
    deadline = time.time() + 900
    log = killed_dir / "trials.jsonl"
    while time.time() < deadline:  # kill once epoch 1 (after its training pass) is being scored
        if log.exists() and '"epoch":1' in log.read_text() and '"phase":"search"' in log.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _finished(killed_dir)
    assert 0 < len(before) < 12
    resumed = _search(killed_dir, "--resume")
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    after = _finished(killed_dir)
    assert all(after[k] == v for k, v in before.items())  # nothing finished was redone
    expected = _finished(tmp_path / "ref")
    assert sorted(after) == sorted(expected) == list(range(12))
    for k in expected:
        assert after[k][0] == expected[k][0]
        assert after[k][1] == pytest.approx(expected[k][1], abs=1e-9)
    updates = lambda d: [json.loads(x)["update"] for x in (d / "controller_updates.jsonl").read_text().splitlines()]  # noqa: E731
    assert updates(killed_dir) == updates(tmp_path / "ref")


def _image_folder(root: Path, classes: int = 3, per_class: int = 30) -> Path:
    """A small ImageFolder of random 32x32 PNGs (the cost test needs data, not real images)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / "train" / f"c{c}" / f"{i}.png")
    return root


def test_cost_limit_and_front_in_weight_sharing_mode(tmp_path):
    """Over-limit proposals are rejected before scoring; the front covers the final phase only."""
    from nasnet_det.search import run_search
    from nasnet_det.search.report import load_trials, write_report

    target, limit = 16_000, 19_000  # tiny children have about 14k-25k parameters
    cfg = load_config(None, TINY + ["data.root", str(_image_folder(tmp_path / "data")), "data.val_size", "30",
                                    "data.train_size", "0", "num_archs", "4", "weight_sharing.epochs", "1",
                                    "weight_sharing.final_archs", "8", "cost.metric", "params",
                                    "cost.target", str(target), "cost.limit", str(limit)])
    summary = run_search(cfg, tmp_path / "s")
    trials = load_trials(tmp_path / "s")
    rejected = [t for t in trials if t.status == "rejected"]
    ok = [t for t in trials if t.status == "ok"]
    assert rejected and ok and summary.rejected == len(rejected)
    for t in rejected:
        assert t.extra["cost"] > limit and "accuracy" not in t.extra  # never scored
    for t in ok:
        assert t.params == t.extra["cost"] <= limit
        assert t.reward == pytest.approx(t.extra["accuracy"] * (t.extra["cost"] / target) ** -0.07, rel=1e-12)
    report = write_report(tmp_path / "s", top_k=2, draw=False)
    assert Path(report["cost_front"]["plot"]).stat().st_size > 0
    front = json.loads((tmp_path / "s" / "cost_front.json").read_text())
    final = [t for t in trials if t.info.get("phase") == "final"]
    assert front["trials"] == len(final) and front["rejected"] == sum(t.status == "rejected" for t in final)
    assert {f["trial_id"] for f in front["front"]} <= {t.trial_id for t in final if t.status == "ok"}
    final_ok = [t.reward for t in final if t.status == "ok"]  # summary.json speaks of the ranked phase too
    assert report["ranked_trials"] == len(final_ok) and report["best_reward"] == max(final_ok)
    assert report["mean_reward"] == pytest.approx(sum(final_ok) / len(final_ok))
    # random pixels cannot be learned: the report says the shared weights stayed at chance
    check = report["shared_weights"]
    assert check["chance_loss"] == pytest.approx(math.log(3)) and check["passes"] == 1
    assert check["learned"] is False


def test_report_and_cli_warn_when_the_shared_weights_never_beat_chance(tmp_path, capsys):
    """``summary.json: shared_weights`` compares the last training pass with ln(classes); the
    report command prints one warning line when the supernet did not learn, none when it did."""
    from nasnet_det.search.driver import EPOCHS_NAME
    from nasnet_det.search.report import shared_weights_check

    sys.path.insert(0, str(ROOT / "tools"))
    import search as search_tool

    assert shared_weights_check(tmp_path) is None  # a multi-trial folder has no training passes
    chance = math.log(10)
    for loss, learned in ((2.38, False), (0.95 * chance, False), (1.20, True)):
        (tmp_path / EPOCHS_NAME).write_text(json.dumps([{"epoch": 0, "train_loss": 5.1, "chance_loss": chance},
                                                        {"epoch": 1, "train_loss": loss, "chance_loss": chance}]))
        check = shared_weights_check(tmp_path)
        assert check["learned"] is learned and check["final_train_loss"] == loss and check["passes"] == 2
        search_tool.warn_untrained({"shared_weights": check})
        err = capsys.readouterr().err
        assert ("warning: the shared weights did not learn" in err) is not learned
        assert err.count("\n") == (0 if learned else 1)

    # once the final phase is scored, its held-out accuracies decide (1.5 x chance), whatever the loss
    from nasnet_det.search.trial_log import Trial

    def final(accuracies, phase="final"):
        return [Trial(i, [], {}, 0, {"phase": phase}, status="ok", reward=a, extra={"accuracy": a})
                for i, a in enumerate(accuracies)]

    for accuracies, loss, learned in (([0.12, 0.16], 1.20, False), ([0.20, 0.22], 2.13, True),
                                      ([0.30], 2.38, True)):
        (tmp_path / EPOCHS_NAME).write_text(json.dumps([{"epoch": 0, "train_loss": loss, "chance_loss": chance}]))
        check = shared_weights_check(tmp_path, final(accuracies) + final([0.9], phase="search"))
        assert check["learned"] is learned and check["final_proposals"] == len(accuracies)
        assert check["final_mean_accuracy"] == pytest.approx(sum(accuracies) / len(accuracies))
        search_tool.warn_untrained({"shared_weights": check})
        err = capsys.readouterr().err
        assert ("final proposals average 14.0 % held-out accuracy, chance 10.0 %" in err) is (not learned)
