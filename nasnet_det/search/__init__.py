"""Architecture search (paper section 3): a controller proposes cells, workers train children,
rewards train the controller.

Entry points: ``load_config`` (YAML schema), ``run_search`` (the durable workqueue driver),
``build_strategy`` (PPO / REINFORCE / random / evolution), ``build_executor`` (inline / process / Ray),
``write_report`` (top-K genotypes, Figure 6 curve, cell diagrams). The command line is
``tools/search.py``; docs/search.md is the user guide.
"""
from .config import ConfigError, SearchConfig, config_from_dict, load_config
from .driver import SearchError, SearchSummary, run_search
from .executors import (
    Executor,
    InlineExecutor,
    ProcessExecutor,
    RayExecutor,
    TrialError,
    WorkerLost,
    build_executor,
)
from .strategies import (
    PPOSearch,
    Proposal,
    RandomSearch,
    RegularizedEvolution,
    REINFORCESearch,
    Strategy,
    build_strategy,
)

__all__ = [
    "ConfigError", "Executor", "InlineExecutor", "PPOSearch", "ProcessExecutor", "Proposal", "RandomSearch",
    "RayExecutor", "REINFORCESearch", "RegularizedEvolution", "SearchConfig", "SearchError", "SearchSummary",
    "Strategy", "TrialError", "WorkerLost", "build_executor", "build_strategy", "config_from_dict", "load_config",
    "run_search",
]
