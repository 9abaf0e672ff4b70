"""Search: controller, PPO, random/evolution, config schema, trial log, driver resume (no child training)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from nasnet_det.search import (
    ConfigError,
    InlineExecutor,
    PPOSearch,
    RandomSearch,
    RegularizedEvolution,
    SearchError,
    load_config,
    run_search,
)
from nasnet_det.search.child import synthetic_reward
from nasnet_det.search.controller import Controller
from nasnet_det.search.report import load_trials, running_top_means, write_report
from nasnet_det.search.trial_log import TrialLogError, fold, read_records
from nasnet_det.space import Genotype, SearchSpace, resolve_genotype

REPO = Path(__file__).resolve().parents[1]
SPACE = SearchSpace()


def synthetic_cfg(**extra: str):
    opts = {"child.trainer": "synthetic", "executor.kind": "inline", "num_archs": "40", "ppo.lr": "0.01"}
    opts.update(extra)
    return load_config(None, [x for kv in opts.items() for x in kv])


# ---------------------------------------------------------------- controller


def test_controller_probabilities_sum_to_one_and_respect_growing_choice_sets():
    torch.manual_seed(0)
    ctrl = Controller(SPACE)
    out = ctrl(batch_size=4)
    assert out.decisions.shape == (4, 2 * 5 * SPACE.num_blocks)
    for t, probs in enumerate(out.step_probs):
        assert probs.shape == (4, SPACE.decision_sizes()[t])  # input choices grow: 2, 3, 4, 5, 6
        assert torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-6)
    for row in out.decisions.tolist():
        SPACE.decode(row)  # every sample is a valid genotype
    for p in ctrl.parameters():
        assert float(p.detach().abs().max()) <= 0.1 + 1e-7  # paper: uniform in [-0.1, 0.1]


def test_controller_log_probs_match_the_sampled_decisions():
    torch.manual_seed(1)
    ctrl = Controller(SPACE)
    sampled = ctrl(batch_size=3)
    by_hand = torch.zeros(3)
    for t, probs in enumerate(sampled.step_probs):
        by_hand += torch.log(probs.gather(1, sampled.decisions[:, t:t + 1]).squeeze(1))
    assert torch.allclose(sampled.log_prob, by_hand, atol=1e-4)
    rescored = ctrl(decisions=sampled.decisions)  # teacher forcing gives the same numbers
    assert torch.allclose(rescored.log_prob, sampled.log_prob, atol=1e-5)
    assert torch.allclose(rescored.entropy, sampled.entropy, atol=1e-5)


def _mean_last(strategy, n: int, window: int) -> float:
    rewards = []
    for i in range(n):
        p = strategy.propose()
        r = synthetic_reward(SPACE.decode(p.decisions))
        rewards.append(r)
        strategy.observe(i, p.decisions, r, p.info)
    return sum(rewards[-window:]) / window


def test_ppo_learns_synthetic_reward_better_than_random_search_across_seeds():
    # lr 0.01 instead of the paper's 0.00035 so that 20 updates suffice in a unit test.
    gaps = []
    for seed in range(3):
        ppo = _mean_last(PPOSearch(SPACE, seed, lr=0.01), 300, 60)
        rnd = _mean_last(RandomSearch(SPACE, seed), 300, 60)
        gaps.append(ppo - rnd)
        assert ppo > rnd + 0.15, f"seed {seed}: PPO {ppo:.3f} vs random {rnd:.3f}"
    assert min(gaps) > 0.15


def test_ppo_update_moves_probability_towards_rewarded_decisions():
    ppo = PPOSearch(SPACE, 0, lr=0.01, batch_size=4, epochs=4)
    torch.set_grad_enabled(False)  # scoring only; update() re-enables it inside
    try:
        _check_update_direction(ppo)
    finally:
        torch.set_grad_enabled(True)


def _check_update_direction(ppo):
    good = ppo.propose().decisions
    bad = ppo.propose().decisions
    before = float(ppo.controller(decisions=[good]).log_prob)
    for i in range(4):
        d, r = (good, 1.0) if i % 2 == 0 else (bad, 0.0)
        ppo.observe(i, d, r, {"log_prob": float(ppo.controller(decisions=[d]).log_prob)})
    assert ppo.num_updates == 1
    assert float(ppo.controller(decisions=[good]).log_prob) > before


def test_evolution_mutates_exactly_one_input_or_op():
    evo = RegularizedEvolution(SPACE, 0, population=5, sample_size=2)
    kinds = SPACE.decision_kinds()
    for i in range(5):
        p = evo.propose()
        evo.observe(i, p.decisions, float(i), p.info)
    for i in range(20):
        parent_pool = [list(d) for d, _ in evo.population]
        child = evo.propose().decisions
        diffs = [min(sum(a != b for a, b in zip(child, par)) for par in parent_pool)]
        assert diffs[0] == 1
        changed = [j for par in parent_pool for j, (a, b) in enumerate(zip(child, par)) if a != b
                   and sum(x != y for x, y in zip(child, par)) == 1]
        assert all(kinds[j] in ("input", "op") for j in changed)
        SPACE.decode(child)
        evo.observe(5 + i, child, 0.5, {})


def test_strategy_state_round_trip(tmp_path):
    from nasnet_det.search.state import load_state, save_state

    a = PPOSearch(SPACE, 3, lr=0.01, batch_size=2)
    for i in range(3):
        p = a.propose()
        a.observe(i, p.decisions, 0.5 + 0.1 * i, p.info)
    save_state(a.state_dict(), tmp_path / "state.safetensors")  # safetensors + JSON, no pickle
    b = PPOSearch(SPACE, 3, batch_size=2)
    b.load_state_dict(load_state(tmp_path / "state.safetensors"))
    a._queue.clear()  # proposals sampled but not handed out are not part of the state
    assert b.propose().decisions == a.propose().decisions  # same weights, same proposal index
    assert b.observed_ids == {0, 1, 2} and len(b.buffer) == 1
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("opts, message", [
    (["child.epoch", "3"], "unknown config key 'child.epoch' (did you mean 'child.epochs'?)"),
    (["child.network.num_cels", "3"],
     "child.network.num_cels: unknown NASNetConfig field(s) ['num_cels'] (did you mean"),
    (["child.arch", "nasnet_b"], "child.arch: unknown model 'nasnet_b'"),
    (["child.count_macs", "1"], "child.count_macs: expected true/false"),
    (["child.lr=0.1"], "write 'child.lr 0.1'"),
    (["strategy", "rl"], "strategy: 'rl' is not one of"),
    (["child.epochs", "two"], "child.epochs: expected an integer"),
    (["ppo.lr", "0"], "ppo.lr: must be > 0"),
    (["space.ops", "[sep_conv_3x3, foo]"], "unknown op 'foo'"),
    (["evolution.sample_size", "500"], "evolution.sample_size"),
    (["num_archs"], "KEY VALUE pairs"),
])
def test_config_errors_name_the_key(opts, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(REPO / "configs/search/cpu_demo.yaml", opts)


def test_shipped_configs_load_with_paper_values(tmp_path):
    paper = load_config(REPO / "configs/search/cifar10_paper.yaml")
    assert (paper.num_archs, paper.child.epochs, paper.child.network.num_cells, paper.strategy) == (20000, 20, 2, "ppo")
    assert (paper.ppo.lr, paper.ppo.entropy_weight, paper.ppo.baseline_decay, paper.ppo.batch_size,
            paper.ppo.hidden_size) == (0.00035, 0.00001, 0.95, 20, 100)
    assert paper.data.val_size == 5000 and paper.child.momentum == 0.9
    for path in sorted((REPO / "configs/search").glob("*.yaml")):
        load_config(path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("child:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml' is not a yaml mapping of config keys"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file .* does not exist"):
        load_config(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- log


def test_log_tolerates_a_torn_last_line_and_rejects_a_corrupt_middle(tmp_path):
    cfg = synthetic_cfg(num_archs="5")
    run_search(cfg, tmp_path / "s", executor=InlineExecutor())
    log = tmp_path / "s" / "trials.jsonl"
    good = log.read_text()
    log.write_text(good + '{"trial_id": 5, "status": "runn')  # a crash mid-write
    assert len(read_records(log)) == len(good.splitlines())
    read_records(log, cut_torn_tail=True)
    assert log.read_text() == good
    lines = good.splitlines()
    log.write_text("\n".join(lines[:2] + ["{garbage"] + lines[2:]) + "\n")
    with pytest.raises(TrialLogError, match=r"trials.jsonl:3: corrupt log record"):
        read_records(log)


# ---------------------------------------------------------------- driver


def _finished_ids(folder: Path) -> list[int]:
    return [r["trial_id"] for r in read_records(folder / "trials.jsonl") if r["status"] in ("ok", "failed")]


def test_inline_search_writes_log_state_and_outputs(tmp_path):
    cfg = synthetic_cfg(num_archs="40", **{"ppo.batch_size": "10"})
    summary = run_search(cfg, tmp_path, executor=InlineExecutor())
    assert (summary.finished, summary.ok, summary.updates) == (40, 40, 4)
    assert sorted(_finished_ids(tmp_path)) == list(range(40))
    rec = read_records(tmp_path / "trials.jsonl")[-1]
    for key in ("genotype", "reward", "params", "macs", "seconds", "worker", "seed", "status"):
        assert key in rec
    assert (tmp_path / "strategy_state.safetensors").exists()
    assert len((tmp_path / "controller_updates.jsonl").read_text().splitlines()) == 4
    report = write_report(tmp_path, top_k=5, draw=False)
    assert Path(report["reward_curve"]).stat().st_size > 0
    top = json.loads((tmp_path / "top_genotypes.json").read_text())
    assert [t["rank"] for t in top] == [1, 2, 3, 4, 5]
    assert top[0]["reward"] == max(t.reward for t in load_trials(tmp_path))
    g = resolve_genotype(str(tmp_path / "top" / "rank01.json"))
    assert isinstance(g, Genotype) and Genotype.from_json(tmp_path / "best_genotype.json") is not None
    with pytest.raises(SearchError, match="pass --resume"):
        run_search(cfg, tmp_path, executor=InlineExecutor())


def test_resume_replays_unobserved_rewards_and_reruns_in_flight_trials(tmp_path):
    cfg = synthetic_cfg(num_archs="30", **{"ppo.batch_size": "10"})

    class Crash(Exception):
        pass

    def crash_after(n):
        seen = []

        def hook(status, trial):
            if status == "ok":
                seen.append(trial.trial_id)
                if len(seen) == n:
                    raise Crash()
        return hook

    with pytest.raises(Crash):  # dies after 13 rewards: 1 update done, 3 rewards not yet used
        run_search(cfg, tmp_path, executor=InlineExecutor(), on_event=crash_after(13))
    log = tmp_path / "trials.jsonl"
    with open(log, "a") as f:  # plus a trial that was sampled (in flight) and a torn line
        rec = read_records(log)[0]
        f.write(json.dumps(dict(rec, trial_id=13, status="running", reward=None)) + "\n")
        f.write('{"trial_id": 14, "sta')
    summary = run_search(cfg, tmp_path, resume=True, executor=InlineExecutor())
    ids = _finished_ids(tmp_path)
    assert sorted(ids) == list(range(30)) and len(ids) == len(set(ids))
    assert summary.updates == 3  # 30 rewards / 10: none lost, none counted twice
    trials = fold(read_records(log))
    assert all(t.status == "ok" for t in trials.values())


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_other_strategies_run_through_the_same_driver(tmp_path, strategy):
    cfg = synthetic_cfg(strategy=strategy, num_archs="30", **{"evolution.population": "10",
                                                              "evolution.sample_size": "3"})
    summary = run_search(cfg, tmp_path, executor=InlineExecutor())
    assert summary.ok == 30 and summary.updates == 0


def test_failing_trainer_is_recorded_failed_without_retry_and_a_broken_setup_stops(tmp_path):
    cfg = synthetic_cfg(num_archs="3", **{"child.trainer": "nonexistent_module_xyz:train"})
    summary = run_search(cfg, tmp_path / "a", executor=InlineExecutor())
    assert (summary.failed, summary.retries) == (3, 0)
    assert "cannot import" in read_records(tmp_path / "a" / "trials.jsonl")[-1]["error"]
    cfg = synthetic_cfg(num_archs="50", **{"child.trainer": "nonexistent_module_xyz:train"})
    with pytest.raises(SearchError, match="the first 10 trials all failed"):
        run_search(cfg, tmp_path / "b", executor=InlineExecutor())
    from nasnet_det.search.data import DataError

    with pytest.raises(DataError, match="dataset folder not found"):
        run_search(synthetic_cfg(**{"child.trainer": "cifar", "data.root": str(tmp_path / "nope")}),
                   tmp_path / "c", executor=InlineExecutor())


def test_running_top_means():
    curves = running_top_means([0.1, None, 0.5, 0.3, 0.9], ks=(1, 2))
    assert curves[1] == [0.1, 0.1, 0.5, 0.5, 0.9]
    assert curves[2][:2] == [None, None] and math.isclose(curves[2][-1], 0.7)


def test_retrain_top_k_picks_a_winner_and_cli_plot_compares_strategies(tmp_path):
    import runpy

    from nasnet_det.search.retrain import retrain_top

    search = tmp_path / "ppo"
    run_search(synthetic_cfg(num_archs="12"), search, executor=InlineExecutor())
    out = retrain_top(search, tmp_path / "retrain", top_k=3, overrides=["executor.kind", "inline"])
    winner = out["winner"]
    assert out["summary"].ok == 3 and winner["epochs"] == 5 * 20
    assert Genotype.from_json(Path(winner["genotype_file"])) is not None
    top3 = {t["trial_id"] for t in json.loads((search / "top_genotypes.json").read_text())[:3]} \
        if (search / "top_genotypes.json").exists() else None
    assert top3 is None or winner["search_trial"] in top3
    rnd = tmp_path / "random"
    run_search(synthetic_cfg(num_archs="12", strategy="random"), rnd, executor=InlineExecutor())
    tool = runpy.run_path(str(REPO / "tools" / "search.py"), run_name="search_tool")
    fig = tmp_path / "figure6.png"
    assert tool["main"](["plot", str(search), str(rnd), "--labels", "PPO", "random", "--output", str(fig)]) == 0
    assert fig.stat().st_size > 0
    assert tool["main"](["--config-file", str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "x")]) == 2


def test_a_worker_that_keeps_dying_is_retried_boundedly_then_recorded_failed(tmp_path):
    from concurrent.futures import Future

    from nasnet_det.search.executors import Executor, WorkerLost

    class DyingExecutor(Executor):
        slots = 2
        calls = 0

        def submit(self, task):
            DyingExecutor.calls += 1
            fut = Future()
            if task["trial_id"] == 1:
                fut.set_exception(WorkerLost("trial 1: worker pid 123 died (killed by signal 9)"))
            else:
                fut.set_result({"reward": 0.5, "params": 1, "macs": 1, "seconds": 0.0, "worker": "fake"})
            return fut

    cfg = synthetic_cfg(num_archs="4", **{"executor.max_retries": "2"})
    summary = run_search(cfg, tmp_path, executor=DyingExecutor())
    assert (summary.ok, summary.failed, summary.retries) == (3, 1, 2)
    assert DyingExecutor.calls == 4 + 2
    trials = fold(read_records(tmp_path / "trials.jsonl"))
    assert trials[1].status == "failed" and trials[1].attempt == 2 and "signal 9" in trials[1].error


# ---------------------------------------------------------------- cost (multi-trial)

TINY_CHILD = {"child.network.num_cells": "1", "child.network.num_conv_filters": "8"}
PARAMS_LIMIT = 19000  # tiny children have about 14k-25k parameters: the limit rejects some, not all


class RecordingExecutor(InlineExecutor):
    """Runs trials inline and remembers which ones it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def submit(self, task):
        self.seen.append(task["trial_id"])
        return super().submit(task)


def _own_params(cfg, genotype: dict) -> int:
    """The child's parameter count, counted here (not through the driver's CostModel)."""
    from nasnet_det.modeling import NASNet
    from nasnet_det.search.config import child_network

    return sum(p.numel() for p in NASNet(child_network(cfg.child, Genotype.from_dict(genotype), image_size=32))
               .parameters())


def _cost_cfg(**extra: str):
    return synthetic_cfg(**{"strategy": "random", "num_archs": "30", **TINY_CHILD, "cost.metric": "params",
                            "cost.limit": str(PARAMS_LIMIT), **extra})


def test_multi_trial_cost_limit_rejects_before_the_executor_and_soft_objective_scales_reward(tmp_path):
    target, weight = 16000.0, -0.5
    cfg = _cost_cfg(**{"cost.target": str(target), "cost.weight": str(weight)})
    executor = RecordingExecutor()
    summary = run_search(cfg, tmp_path, executor=executor)
    trials = fold(read_records(tmp_path / "trials.jsonl"))
    rejected = [t for t in trials.values() if t.status == "rejected"]
    ok = [t for t in trials.values() if t.status == "ok"]
    assert rejected and ok and len(rejected) + len(ok) == 30
    assert (summary.rejected, summary.ok, summary.finished) == (len(rejected), len(ok), 30)
    assert sorted(executor.seen) == sorted(t.trial_id for t in ok)  # a rejected trial never reached it
    for t in rejected:
        assert t.extra["cost"] == _own_params(cfg, t.genotype) > PARAMS_LIMIT
        assert t.reward is None and "exceeds cost.limit" in t.error and t.extra["cost_metric"] == "params"
    for t in ok:
        cost = t.extra["cost"]
        assert cost == _own_params(cfg, t.genotype) <= PARAMS_LIMIT
        accuracy = synthetic_reward(Genotype.from_dict(t.genotype))
        assert t.extra["accuracy"] == accuracy  # the trainer's raw reward is kept
        assert t.reward == pytest.approx(accuracy * (cost / target) ** weight, rel=1e-12)
    assert any(abs(t.reward - t.extra["accuracy"]) > 1e-3 for t in ok)


def test_the_strategy_learns_the_lowest_reward_from_a_rejected_trial(tmp_path):
    """Without feedback a controller would keep proposing over-limit cells; it is told REJECTED_FEEDBACK."""
    from nasnet_det.search.driver import REJECTED_FEEDBACK
    from nasnet_det.search.strategies import build_strategy, space_of

    cfg = _cost_cfg()
    strategy = build_strategy(cfg, space_of(cfg))
    told: dict[int, float | None] = {}
    observe = strategy.observe

    def recording_observe(trial_id, decisions, reward, info):
        told[trial_id] = reward
        return observe(trial_id, decisions, reward, info)

    strategy.observe = recording_observe
    run_search(cfg, tmp_path, executor=RecordingExecutor(), strategy=strategy)
    trials = fold(read_records(tmp_path / "trials.jsonl"))
    assert {i for i, t in trials.items() if t.status == "rejected"}
    for i, t in trials.items():
        assert told[i] == (REJECTED_FEEDBACK if t.status == "rejected" else t.reward)


def test_multi_trial_resume_never_trains_a_rejected_trial(tmp_path):
    cfg = _cost_cfg(strategy="ppo", **{"ppo.batch_size": "4"})
    reference = tmp_path / "ref"
    run_search(cfg, reference, executor=InlineExecutor())

    class Crash(Exception):
        pass

    state = {"rejected": 0}

    def crash_on_an_over_limit_proposal(status, trial):
        state["rejected"] += status == "rejected"
        if status == "running" and state["rejected"] and _own_params(cfg, trial.genotype) > PARAMS_LIMIT:
            raise Crash()  # logged as running, not yet checked against the limit

    out = tmp_path / "s"
    first = RecordingExecutor()
    with pytest.raises(Crash):
        run_search(cfg, out, executor=first, on_event=crash_on_an_over_limit_proposal)
    before = fold(read_records(out / "trials.jsonl"))
    in_flight = [t.trial_id for t in before.values() if t.status == "running"]
    assert len(in_flight) == 1
    second = RecordingExecutor()
    summary = run_search(cfg, out, resume=True, executor=second)
    after = fold(read_records(out / "trials.jsonl"))
    rejected = {t.trial_id for t in after.values() if t.status == "rejected"}
    assert in_flight[0] in rejected and rejected & set(first.seen + second.seen) == set()
    assert len(first.seen + second.seen) == len(set(first.seen + second.seen)) == summary.ok
    statuses = [r["trial_id"] for r in read_records(out / "trials.jsonl") if r["status"] != "running"]
    assert sorted(statuses) == list(range(30))  # every trial finished exactly once
    expected = fold(read_records(reference / "trials.jsonl"))
    assert {i: (t.decisions, t.status, t.reward) for i, t in after.items()} == \
        {i: (t.decisions, t.status, t.reward) for i, t in expected.items()}


def test_cost_front_keeps_only_non_dominated_trials():
    from nasnet_det.search.report import cost_front
    from nasnet_det.search.trial_log import Trial

    def trial(tid, cost, acc, status="ok"):
        return Trial(tid, [], {}, 0, status=status, reward=acc if status == "ok" else None,
                     extra={"cost": cost, "accuracy": acc} if status == "ok" else {"cost": cost})

    trials = [trial(0, 2.0, 0.5), trial(1, 1.0, 0.5), trial(2, 2.0, 0.7), trial(3, 3.0, 0.6),
              trial(4, 1.0, 0.5), trial(5, 4.0, 0.9), trial(6, 0.5, 0.0, "rejected"), trial(7, 3.0, 0.7)]
    assert [t.trial_id for t in cost_front(trials)] == [1, 2, 5]


def test_report_writes_the_cost_front_of_a_multi_trial_search(tmp_path):
    run_search(_cost_cfg(**{"cost.target": "16000"}), tmp_path, executor=InlineExecutor())
    report = write_report(tmp_path, top_k=3, draw=False)
    assert Path(report["cost_front"]["plot"]).stat().st_size > 0
    data = json.loads((tmp_path / "cost_front.json").read_text())
    trials = load_trials(tmp_path)
    ok = [t for t in trials if t.status == "ok"]
    assert (data["metric"], data["target"], data["limit"]) == ("params", 16000.0, PARAMS_LIMIT)
    assert data["rejected"] == sum(t.status == "rejected" for t in trials) > 0
    front = {f["trial_id"] for f in data["front"]}

    def dominates(a, b):  # a at most as costly, at least as accurate, better in one
        ca, aa, cb, ab = a.extra["cost"], a.extra["accuracy"], b.extra["cost"], b.extra["accuracy"]
        return ca <= cb and aa >= ab and (ca < cb or aa > ab)

    by_id = {t.trial_id: t for t in ok}
    assert front and front <= set(by_id)
    for f in data["front"]:
        t = by_id[f["trial_id"]]
        assert (f["cost"], f["accuracy"], f["reward"]) == (t.extra["cost"], t.extra["accuracy"], t.reward)
        assert not any(dominates(o, t) for o in ok)
    for t in ok:  # and every trial left out is matched or beaten by one on the front
        assert t.trial_id in front or any(by_id[i].extra["cost"] <= t.extra["cost"] and
                                          by_id[i].extra["accuracy"] >= t.extra["accuracy"] for i in front)
