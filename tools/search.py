#!/usr/bin/env python
"""Architecture search from the command line (docs/search.md).

  tools/search.py --config-file configs/search/cpu_demo.yaml --output output/search_demo [KEY VALUE ...]
  tools/search.py --config-file configs/search/cpu_demo.yaml --print-config [KEY VALUE ...]  # resolved yaml
  tools/search.py --output output/search_demo --resume              # continue after a crash / Ctrl-C
  tools/search.py --output output/search_demo --resume --repair     # ... moving corrupt log lines aside
  tools/search.py retrain --search output/search_demo --output output/retrain_demo --top-k 5 [KEY VALUE ...]
  tools/search.py plot output/ppo output/random --output figure6.png  # the paper's Figure 6
  tools/search.py report output/search_demo                          # top-K JSON, curve, cell diagrams
  tools/search.py evaluate-ranking --search output/search_ws --output output/ranking --archs 12 --epochs 2
  tools/search.py compare --config-file configs/search/cifar10_weight_sharing.yaml --output output/compare \
      --genotype searched=output/search_ws/best_genotype.json --genotype nasnet_a --random 5 --seeds 2 child.epochs 5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasnet_det.config import add_config_arguments, config_yaml, parse_tool_args  # noqa: E402  (after the path line)


def _search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/search.py", description="Run or resume an architecture search.",
                                epilog="Subcommands: retrain, plot, report, evaluate-ranking, compare "
                                   "(tools/search.py <cmd> --help).")
    add_config_arguments(p)
    p.add_argument("--output", help="search folder: log, controller state, outputs (required unless --print-config)")
    p.add_argument("--resume", action="store_true", help="continue the search in --output")
    p.add_argument("--repair", action="store_true",
                   help="with --resume: move corrupt trials.jsonl records aside to trials.jsonl.corrupt and "
                        "continue with every intact record")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="load an older version's strategy_state.pt even if torch.load(weights_only=True) "
                        "refuses it (runs any code in the file: only for files you trust)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip the top-K / plot / diagram outputs at the end")
    return p


def cmd_search(argv: list[str]) -> int:
    from nasnet_det.errors import ConfigError
    from nasnet_det.search import SearchError, load_config, run_search
    from nasnet_det.search.report import write_report

    args = parse_tool_args(_search_parser(), argv)
    config_file = args.config_file
    if args.output is None and not (args.print_config and config_file):
        raise ConfigError("--output is required (the search folder)")
    if config_file is None:
        saved = Path(args.output) / "config.yaml"
        if not (args.resume and saved.exists()):
            raise ConfigError("--config-file is required (it may be omitted only with --resume on a "
                              "search folder that has config.yaml)")
        config_file = saved
    cfg = load_config(config_file, args.opts)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    summary = run_search(cfg, args.output, resume=args.resume, progress=not args.no_progress, repair=args.repair,
                         allow_unsafe_pickle=args.allow_unsafe_pickle)
    if summary.finished and not summary.ok:
        if not summary.failed:
            raise SearchError(f"every architecture ({summary.rejected}) exceeded cost.limit {cfg.cost.limit} "
                              f"({cfg.cost.metric}) and was rejected; raise cost.limit or shrink child.network")
        raise SearchError(f"no architecture was trained successfully ({summary.failed} failed); first failure: "
                          f"{summary.first_failure}; all errors are in {Path(args.output) / 'trials.jsonl'}")
    print(f"search {cfg.name}: {summary.finished}/{cfg.num_archs} architectures finished "
          f"({summary.ok} ok, {summary.failed} failed, {summary.rejected} rejected by cost.limit, "
          f"{summary.retries} retries) in {summary.seconds:.1f}s; "
          f"best reward {summary.best_reward} (trial {summary.best_trial}); {summary.updates} controller updates")
    if not args.no_report:
        report = write_report(args.output, top_k=cfg.top_k)
        print(f"top genotypes: {Path(args.output) / 'top_genotypes.json'}; curve: {report['reward_curve']}; "
              f"cell diagrams: {len(report['cell_diagrams'])}")
        if report["cost_front"]:
            print(f"accuracy/cost front: {report['cost_front']['plot']}, {report['cost_front']['json']}")
        warn_untrained(report)
    return 0


def warn_untrained(report: dict) -> None:
    """One ``warning:`` line when a weight-sharing search's shared weights never beat chance."""
    from nasnet_det.search.report import untrained_warning

    said = untrained_warning(report.get("shared_weights"))
    if said:
        print(f"warning: {said}", file=sys.stderr)


def cmd_retrain(argv: list[str]) -> int:
    from nasnet_det.errors import ConfigError
    from nasnet_det.search.retrain import retrain_config, retrain_top

    p = argparse.ArgumentParser(prog="tools/search.py retrain",
                                description="Retrain the top-K genotypes of a search longer and pick the winner.")
    p.add_argument("--search", required=True, help="the search output folder")
    p.add_argument("--output", help="retrain output folder (required unless --print-config)")
    p.add_argument("--top-k", type=int, default=250, help="how many to retrain (paper: 250)")
    p.add_argument("--epochs", type=int, default=0, help="epochs per child (default: 5x the search's)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--print-config", action="store_true", help="print the retraining config as yaml and exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the search's config")
    args = parse_tool_args(p, argv)
    if args.print_config:
        print(config_yaml(retrain_config(Path(args.search), args.opts, args.epochs or None, args.top_k)), end="")
        return 0
    if args.output is None:
        raise ConfigError("--output is required (the retrain folder)")
    out = retrain_top(args.search, args.output, args.top_k, args.epochs or None, args.opts, args.resume,
                      progress=not args.no_progress)
    w = out["winner"]
    print(f"winner: search trial {w['search_trial']} (search reward {w['search_reward']:.4f}) -> retrained "
          f"reward {w['retrain_reward']:.4f} after {w['epochs']} epochs; genotype: {w['genotype_file']}")
    return 0


def cmd_plot(argv: list[str]) -> int:
    from nasnet_det.errors import ConfigError
    from nasnet_det.search.report import load_trials, plot_reward_curves

    p = argparse.ArgumentParser(prog="tools/search.py plot", description="Figure 6 for one or more searches.")
    p.add_argument("folders", nargs="+", help="search output folders")
    p.add_argument("--labels", nargs="*", help="one label per folder (default: folder names)")
    p.add_argument("--output", required=True, help="image file, e.g. figure6.png")
    args = parse_tool_args(p, argv)
    labels = args.labels or [Path(f).name for f in args.folders]
    if len(labels) != len(args.folders):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(args.folders)} folders")
    path = plot_reward_curves({lab: load_trials(f) for lab, f in zip(labels, args.folders)}, args.output)
    print(f"wrote {path}")
    return 0


def cmd_report(argv: list[str]) -> int:
    from nasnet_det.search.report import write_report

    p = argparse.ArgumentParser(prog="tools/search.py report", description="Outputs of a search folder.")
    p.add_argument("folder")
    p.add_argument("--top-k", type=int, default=10)
    args = parse_tool_args(p, argv)
    report = write_report(args.folder, top_k=args.top_k)
    print(f"{report['ok']} ok / {report['sampled']} sampled; best {report['best_reward']}; "
          f"wrote {len(report['top_genotypes'])} genotypes, {report['reward_curve']}")
    if report["cost_front"]:
        print(f"accuracy/cost front: {report['cost_front']['plot']}, {report['cost_front']['json']}")
    warn_untrained(report)
    return 0


def _add_training_run_arguments(p: argparse.ArgumentParser, opts_help: str) -> None:
    """The flags every command that trains a fixed list of cells through the driver shares."""
    p.add_argument("--resume", action="store_true", help="continue the trainings in --output")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help=opts_help)


def cmd_evaluate_ranking(argv: list[str]) -> int:
    from nasnet_det.search.ranking import evaluate_ranking, summary_line

    p = argparse.ArgumentParser(prog="tools/search.py evaluate-ranking",
                                description="Kendall's tau / Spearman's rho between the shared-weight and the "
                                            "stand-alone accuracy of random architectures (Yu et al. 2019).")
    p.add_argument("--search", required=True, help="the folder of a weight-sharing search (supernet.safetensors)")
    p.add_argument("--output", required=True, help="folder for the stand-alone trainings and ranking.json / .png")
    p.add_argument("--archs", type=int, default=12, help="K architectures, drawn uniformly (at least 3; default 12)")
    p.add_argument("--epochs", type=int, required=True, help="stand-alone training epochs per architecture")
    p.add_argument("--seed", type=int, default=0, help="draws the architectures and seeds their trainings")
    _add_training_run_arguments(p, "KEY VALUE overrides of the search's config (e.g. data.root, executor.workers)")
    args = parse_tool_args(p, argv)
    result = evaluate_ranking(args.search, args.output, args.archs, args.epochs, args.seed, args.opts, args.resume,
                              progress=not args.no_progress)
    print(summary_line(result, args.output))
    return 0


def cmd_compare(argv: list[str]) -> int:
    from nasnet_det.search.compare import COMPARE_NAME, MARKDOWN_NAME, compare_cells

    p = argparse.ArgumentParser(prog="tools/search.py compare",
                                description="Train given cells and uniformly random cells with the same budget for "
                                            "several seeds; mean ± std on the same evaluation images.")
    p.add_argument("--config-file", required=True, help="the child training (e.g. a search config)")
    p.add_argument("--output", required=True, help="folder for the trainings, compare.json and compare.md")
    p.add_argument("--genotype", action="append", default=[], metavar="[LABEL=]SPEC",
                   help="a cell: a registered name (nasnet_a) or a genotype JSON, optionally labelled; repeatable. "
                        "The first is the one compared with the best random cell")
    p.add_argument("--random", type=int, default=5, help="uniformly random cells from the config's space (default 5)")
    p.add_argument("--seeds", type=int, default=2, help="trainings per cell, one per seed (default 2)")
    p.add_argument("--seed", type=int, default=0, help="draws the random cells and the child seeds")
    _add_training_run_arguments(p, "KEY VALUE overrides (e.g. child.epochs 5)")
    args = parse_tool_args(p, argv)
    result = compare_cells(args.config_file, args.output, args.genotype, args.random, args.seeds, args.seed,
                           args.opts, args.resume, progress=not args.no_progress)
    print(f"{result['verdict']} Wrote {Path(args.output) / COMPARE_NAME} and {Path(args.output) / MARKDOWN_NAME}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Every user mistake (a ``NASNetError``: bad config, data, log, state, a locked folder, a full
    disk) is one ``error:`` line on stderr and exit status 2, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from nasnet_det.errors import NASNetError

    commands = {"retrain": cmd_retrain, "plot": cmd_plot, "report": cmd_report,
                "evaluate-ranking": cmd_evaluate_ranking, "compare": cmd_compare}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return cmd_search(argv)
    except (NASNetError, FileNotFoundError) as err:
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the log; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
