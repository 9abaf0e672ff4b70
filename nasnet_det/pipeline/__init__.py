"""The whole loop in one command (``make pipeline``, ``tools/run_pipeline.py``): search a cell on
CIFAR-10, pretrain it, NASNet-A and a random cell with the same skeleton and budget, export each to
detectron2, train and evaluate the demo detector with each, and report the comparison.

``load_config`` reads ``configs/pipeline/*.yaml`` with ``KEY VALUE`` overrides; ``run_pipeline``
runs (or resumes) the stages in an output folder; docs/pipeline.md is the user guide.
"""
from .config import PipelineConfig, load_config
from .runner import check_tool_configs, run_pipeline

__all__ = ["PipelineConfig", "check_tool_configs", "load_config", "run_pipeline"]
