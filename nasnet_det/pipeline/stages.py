"""The pipeline's steps, each one run of a project tool in a child process.

Why child processes: each step then is exactly the command a user would type (``tools/search.py``,
``tools/pretrain.py``, ``tools/convert_weights.py export-d2``, ``tools/run_demo.py``), resumes
with that tool's own resume, holds that tool's own lock, and returns its memory when it ends.
Each child gets ``PR_SET_PDEATHSIG`` on Linux, so a SIGKILL of the pipeline also ends the step it
was running instead of leaving it training (and holding its folder's lock) in the background.
A tool's output goes to ``<output>/logs/<step>.log``; a failure is one ``PipelineError`` with the
tool's own ``error:`` line and the log's path.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .config import REPO, PipelineConfig, resolve

TOOLS = REPO / "tools"


@dataclass(frozen=True)
class Backbone:
    """One network of the comparison: its name in the report, its genotype setting, pretrained or not."""

    name: str
    genotype: str          # a registered name or a JSON path (model.overrides.genotype / MODEL.NASNET.GENOTYPE)
    pretrained: str = ""   # the backbone whose exported weights initialise the detector ("" = from scratch)


def opts_words(values: Any) -> list[str]:
    """A config ``opts`` list as command-line words (non-strings as YAML/JSON text: 1, true, [a, b])."""
    return [v if isinstance(v, str) else json.dumps(v) for v in values]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def run_tool(step: str, argv: list[str], log: Path, threads: int) -> None:
    """``python <argv>`` from the repository root, output appended to ``log``; PipelineError if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS=str(threads))
    with open(log, "ab") as out:  # a log, appended to by every attempt; not an output the report reads
        out.write(f"\n$ {' '.join([sys.executable, *argv])}\n".encode())
        out.flush()
        code = subprocess.call([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO),
                               env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    if code != 0:
        lines = log.read_text(errors="replace").splitlines()
        said = next((ln for ln in reversed(lines) if "error:" in ln), lines[-1] if lines else "")
        raise PipelineError(f"step {step}: {Path(argv[0]).name} exited with status {code}"
                            f"{': ' + said.strip() if said else ''} (full output: {log})")


# ------------------------------------------------------------------------------------------ steps
def search_argv(cfg: PipelineConfig, out: Path, data_root: Path) -> list[str]:
    """tools/search.py on the pipeline's CIFAR-10; ``--resume`` once the folder holds a search."""
    folder = out / "search"
    argv = [str(TOOLS / "search.py"), "--config-file", str(resolve(cfg.search.config)), "--output", str(folder),
            "--no-progress"]
    if folder.is_dir() and any(p.name != ".lock" for p in folder.iterdir()):
        argv.append("--resume")
    return argv + ["data.root", str(data_root), *opts_words(cfg.search.opts)]


def backbone_opts(cfg: PipelineConfig, genotype: str, detector: bool) -> list[str]:
    """The shared skeleton with this backbone's cells, as pretraining or as detector keys."""
    b = cfg.backbone
    if detector:
        return ["MODEL.NASNET.ARCH", b.arch, "MODEL.NASNET.NUM_CELLS", str(b.num_cells),
                "MODEL.NASNET.PENULTIMATE_FILTERS", str(b.penultimate_filters), "MODEL.NASNET.GENOTYPE", genotype]
    return ["model.arch", b.arch, "model.overrides.num_cells", str(b.num_cells),
            "model.overrides.penultimate_filters", str(b.penultimate_filters), "model.overrides.genotype", genotype]


def pretrain_argv(cfg: PipelineConfig, out: Path, backbone: Backbone, train_dir: Path, val_dir: Path) -> list[str]:
    """tools/pretrain.py; a rerun resumes from the newest checkpoint (its ``train.resume auto``)."""
    p = cfg.pretrain
    return [str(TOOLS / "pretrain.py"), "--config-file", str(resolve(p.config)),
            *backbone_opts(cfg, backbone.genotype, detector=False),
            "data.train_dir", str(train_dir), "data.val_dir", str(val_dir),
            "data.train_subset", str(cfg.data.train_per_class), "data.val_subset", str(cfg.data.test_per_class),
            "train.epochs", str(float(p.epochs)), "train.max_steps", str(p.max_steps),
            "train.output_dir", str(out / "pretrain" / backbone.name), "train.threads", str(cfg.threads),
            "train.progress_bar", "false", "train.resume", "auto", *opts_words(p.opts)]


def export_argv(cfg: PipelineConfig, out: Path, backbone: Backbone) -> list[str]:
    """tools/convert_weights.py export-d2 of the pretrained EMA weights for the detection config."""
    return [str(TOOLS / "convert_weights.py"), "export-d2",
            "--weights", str(out / "pretrain" / backbone.name / "model_final.safetensors"),
            "--config", str(resolve(cfg.detect.config)), "--out", str(weights_path(out, backbone.name)),
            *backbone_opts(cfg, backbone.genotype, detector=True)]


def detect_argv(cfg: PipelineConfig, out: Path, run: str, backbone: Backbone) -> list[str]:
    """tools/run_demo.py: train on the synthetic shapes (resuming from the last checkpoint), then
    COCOEvaluator on the held-out images; the same iterations for every backbone."""
    d = cfg.detect
    argv = [str(TOOLS / "run_demo.py"), "--output", str(out / "detect" / run), "--config-file", str(resolve(d.config)),
            "--num-train", str(d.num_train), "--num-val", str(d.num_val), "--threads", str(cfg.threads),
            *backbone_opts(cfg, backbone.genotype, detector=True), "SOLVER.MAX_ITER", str(d.max_iter)]
    if backbone.pretrained:
        argv += ["MODEL.WEIGHTS", str(weights_path(out, backbone.pretrained)), "MODEL.NASNET.TRANSFER", d.transfer]
    return argv + opts_words(d.opts)


def weights_path(out: Path, name: str) -> Path:
    return out / "export" / f"{name}.pkl"


def network_stats(cfg: PipelineConfig, genotype: str, image_size: int, num_classes: int) -> dict[str, int]:
    """Parameters (without the aux head, which detection drops) and multiply-adds of one image at
    ``image_size`` of the pretrained classifier (fvcore, as the search counts them)."""
    from ..modeling import NASNet, resolve_network
    from ..search.cost import count_macs
    from ..space import resolve_genotype

    b = cfg.backbone
    net = NASNet(resolve_network(b.arch, num_cells=b.num_cells, penultimate_filters=b.penultimate_filters,
                                 genotype=resolve_genotype(genotype), num_classes=num_classes, use_aux_head=False))
    with warnings.catch_warnings():  # fvcore's tracer: torch.jit deprecation notes, not our concern
        warnings.simplefilter("ignore", FutureWarning)
        macs = count_macs(net, image_size)
    return {"params": sum(p.numel() for p in net.parameters()), "macs": macs, "image_size": image_size}
