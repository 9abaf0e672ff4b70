"""``make pipeline``: search -> pretrain three backbones -> export -> detect -> report, resumable.

:func:`run_pipeline` runs, in ``output``:

1. ``search``: ``tools/search.py`` on CIFAR-10; its best genotype becomes ``genotypes/searched.json``;
2. ``pretrain/<name>``: ``tools/pretrain.py`` for the searched cell, NASNet-A and one random cell
   (the first architecture a random search with ``backbone.random_seed`` samples), the same
   skeleton, data and budget;
3. ``export/<name>``: ``tools/convert_weights.py export-d2`` to detectron2 weights, and the
   network's parameters and multiply-adds (``export/<name>.stats.json``);
4. ``detect/<run>``: ``tools/run_demo.py`` (train on the synthetic shapes, COCOEvaluator on held-out
   images) from each pretrained backbone and once from scratch with the searched cell;
5. ``report``: ``report.md`` (the table), ``report.png``, ``summary.json``.

Each step is recorded in ``stages.json`` (:class:`~nasnet_det.pipeline.ledger.Ledger`) when it has
finished; a rerun with ``--resume`` skips those and starts the others again, each with its tool's
own resume. The run folder is locked while the pipeline runs, and ``config.yaml`` keeps the
resolved config: a resume under another config stops with one error naming the first key that
differs, since finished steps would no longer match it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import yaml

from ..config import first_difference
from ..durable import OutputLock, atomic_write_text
from ..errors import ConfigError, PipelineError, StateError
from .config import PipelineConfig, resolve
from .data import find_cifar10
from .ledger import LEDGER_NAME, Ledger
from .stages import (
    Backbone,
    detect_argv,
    export_argv,
    network_stats,
    opts_words,
    pretrain_argv,
    run_tool,
    search_argv,
    weights_path,
)

CONFIG_NAME = "config.yaml"
PRETRAINED = ("searched", "nasnet_a", "random")
SCRATCH = "searched_scratch"


def backbones(out: Path, random_seed: int) -> dict[str, Backbone]:
    """The three pretrained backbones, and the from-scratch detector run of the searched cell."""
    searched = str(out / "genotypes" / "searched.json")
    runs = {"searched": Backbone("searched", searched, "searched"),
            "nasnet_a": Backbone("nasnet_a", "nasnet_a", "nasnet_a"),
            "random": Backbone("random", str(out / "genotypes" / f"random_seed{random_seed}.json"), "random")}
    runs[SCRATCH] = Backbone(SCRATCH, searched, "")
    return runs


def check_tool_configs(cfg: PipelineConfig) -> None:
    """Load the search and pretraining configs with the pipeline's overrides, so that a mistake in
    ``search.opts`` or ``pretrain.opts`` stops the run at once, not after the stages before it."""
    from ..pretrain import load_config as load_pretrain_config
    from ..search import load_config as load_search_config

    load_search_config(resolve(cfg.search.config), opts_words(cfg.search.opts))
    load_pretrain_config(resolve(cfg.pretrain.config), opts_words(cfg.pretrain.opts), check_paths=False)


def check_folder(cfg: PipelineConfig, out: Path, resume: bool) -> None:
    """A folder with a run needs ``--resume``, and a resume needs the config that run was started with."""
    saved = out / CONFIG_NAME
    if not saved.exists():
        return
    if not resume:
        raise StateError(f"{out}: already holds a pipeline run ({CONFIG_NAME}, {LEDGER_NAME}); pass --resume to "
                         "continue it, or choose another --output")
    diff = first_difference(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, cfg.to_dict())
    if diff:
        key, old, new = diff
        raise ConfigError(f"{saved}: the run being resumed has {key}={old!r}, the given config has {new!r}; "
                          "resume with the same config file and overrides, or choose another --output")


def _step(ledger: Ledger, name: str, work: Callable[[], dict], log: Callable[[str], None]) -> dict:
    """Run ``work`` unless ``name`` is recorded done; record it done with its wall time and results."""
    if ledger.done(name):
        log(f"[pipeline] {name}: done before ({ledger.get(name)['seconds']:.0f} s), skipped")
        return ledger.get(name)
    attempt = ledger.start(name)
    log(f"[pipeline] {name}: {'resuming (attempt ' + str(attempt) + ')' if attempt > 1 else 'starting'}")
    t0 = time.perf_counter()
    info = work()
    seconds = time.perf_counter() - t0
    ledger.finish(name, seconds, **info)
    log(f"[pipeline] {name}: done in {seconds:.0f} s")
    return ledger.get(name)


def _require(path: Path, step: str, log_path: Path) -> Path:
    if not path.exists():
        raise PipelineError(f"step {step}: its tool exited 0 but {path} is missing (output: {log_path})")
    return path


def run_pipeline(cfg: PipelineConfig, output: str | Path, resume: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """The five stages above; returns the summary also written to ``<output>/summary.json``."""
    from .report import write_report

    out = Path(output).resolve()
    check_tool_configs(cfg)
    with OutputLock(out, "pipeline"):
        check_folder(cfg, out, resume)
        data = find_cifar10(resolve(cfg.data.root), resolve(cfg.data.torchvision_root), out / "data" / "cifar10",
                            {"train": cfg.data.train_per_class, "test": cfg.data.test_per_class})
        atomic_write_text(out / CONFIG_NAME, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        ledger = Ledger(out)
        logs = out / "logs"
        log(f"[pipeline] CIFAR-10: {data.source}; run folder {out}")
        nets = backbones(out, cfg.backbone.random_seed)

        def search() -> dict:
            run_tool("search", search_argv(cfg, out, data.root), logs / "search.log", cfg.threads)
            top = json.loads(_require(out / "search" / "top_genotypes.json", "search", logs / "search.log")
                             .read_text(encoding="utf-8"))
            if not top:
                raise PipelineError(f"step search: {out / 'search' / 'top_genotypes.json'} lists no genotype "
                                    "(no architecture finished); see logs/search.log")
            write_genotype(top[0]["genotype"], Path(nets["searched"].genotype), "searched")
            return {"genotype": nets["searched"].genotype}

        _step(ledger, "search", search, log)
        write_random_genotype(cfg, data.root, Path(nets["random"].genotype))
        for name in PRETRAINED:
            net = nets[name]
            step = f"pretrain/{name}"
            _step(ledger, step, lambda net=net, step=step: _pretrain(cfg, out, net, data, step, logs), log)
        for name in PRETRAINED:
            net = nets[name]
            step = f"export/{name}"
            _step(ledger, step, lambda net=net, step=step: _export(cfg, out, net, step, logs), log)
        for name, net in nets.items():
            step = f"detect/{name}"
            _step(ledger, step, lambda name=name, net=net, step=step: _detect(cfg, out, name, net, step, logs), log)
        summary = _step(ledger, "report", lambda: {"files": write_report(out)}, log)
        log(Path(summary["files"]["table"]).read_text(encoding="utf-8"))
        return json.loads(Path(summary["files"]["summary"]).read_text(encoding="utf-8"))


def _pretrain(cfg: PipelineConfig, out: Path, net: Backbone, data, step: str, logs: Path) -> dict:
    log_path = logs / f"{step.replace('/', '_')}.log"
    run_tool(step, pretrain_argv(cfg, out, net, data.train_dir, data.test_dir), log_path, cfg.threads)
    folder = out / "pretrain" / net.name
    _require(folder / "model_final.safetensors", step, log_path)
    return {"metrics": str(_require(folder / "metrics.jsonl", step, log_path))}


def _export(cfg: PipelineConfig, out: Path, net: Backbone, step: str, logs: Path) -> dict:
    log_path = logs / f"{step.replace('/', '_')}.log"
    run_tool(step, export_argv(cfg, out, net), log_path, cfg.threads)
    _require(weights_path(out, net.name), step, log_path)
    from ..durable import atomic_write_json

    run_cfg = json.loads((out / "pretrain" / net.name / "config.json").read_text(encoding="utf-8"))
    classes = sum(1 for p in Path(run_cfg["data"]["train_dir"]).iterdir() if p.is_dir() and not p.name.startswith("."))
    stats = network_stats(cfg, net.genotype, int(run_cfg["data"]["image_size"]), classes)
    stats_path = weights_path(out, net.name).with_suffix(".stats.json")
    atomic_write_json(stats_path, stats)
    return {"weights": str(weights_path(out, net.name)), "stats": str(stats_path)}


def _detect(cfg: PipelineConfig, out: Path, name: str, net: Backbone, step: str, logs: Path) -> dict:
    log_path = logs / f"{step.replace('/', '_')}.log"
    run_tool(step, detect_argv(cfg, out, name, net), log_path, cfg.threads)
    return {"summary": str(_require(out / "detect" / name / "summary.json", step, log_path))}


def write_genotype(genotype: dict, path: Path, name: str) -> None:
    """A genotype dict (as top_genotypes.json holds it) checked and written as a genotype JSON file."""
    from ..space import Genotype

    Genotype.from_dict(dict(genotype, name=name), source=str(path)).to_json(path)


def write_random_genotype(cfg: PipelineConfig, data_root: Path, path: Path) -> None:
    """The first architecture a random search with ``backbone.random_seed`` samples from the search
    config's space: a random cell that the seed alone fixes."""
    if path.exists():
        return
    from ..search import load_config as load_search_config
    from ..search.strategies import RandomSearch, space_of

    search_cfg = load_search_config(resolve(cfg.search.config), ["data.root", str(data_root),
                                                                  *opts_words(cfg.search.opts)])
    space = space_of(search_cfg)
    proposal = RandomSearch(space, cfg.backbone.random_seed).propose()
    space.decode(proposal.decisions, name=path.stem).to_json(path)
