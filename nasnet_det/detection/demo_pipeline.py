"""``make demo``: synthetic data -> train a small NASNet-A detector on the CPU -> mAP + pictures.

:func:`run_demo` does, in ``settings.output``:

1. generates the synthetic shapes dataset (train + held-out val, COCO json) in ``data/``;
2. trains ``configs/nasnet_demo_synthetic.yaml`` with ``NASNetTrainer`` (detectron2's
   DefaultTrainer) on the CPU, checkpoints in ``train/``;
3. evaluates the final model with COCOEvaluator (pycocotools) on the held-out images;
4. annotates some held-out images with :class:`VisualizationDemo`, in ``pictures/``;
5. prints AP / AP50 and where everything is, and writes ``summary.json``.

Running it again with the same output reuses the dataset, resumes an interrupted training from
its last checkpoint and skips a finished one. ``settings.opts`` (``KEY VALUE`` pairs) override the
config; the tests use them for a seconds-long run. ``tools/run_demo.py`` is the command line.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data.synthetic import SHAPES, SyntheticSpec, make_dataset
from ..durable import atomic_write_json

__all__ = ["DEFAULT_CONFIG", "DemoSettings", "auto_threads", "run_demo"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "nasnet_demo_synthetic.yaml"
# long dumps of default_setup / DefaultTrainer that would bury the demo's own output
_QUIET_PREFIXES = ("Model:\n", "Environment info:", "Running with full config", "Contents of args.config_file",
                   "Command line arguments")


@dataclass
class DemoSettings:
    """What ``tools/run_demo.py`` takes on its command line (same names, same defaults)."""

    output: str = "output/demo"
    config_file: str = str(DEFAULT_CONFIG)
    num_train: int = 400  # synthetic training images
    num_val: int = 100  # held-out synthetic images for evaluation
    image_size: int = SyntheticSpec().image_size
    seed: int = 0  # dataset seed
    num_pictures: int = 8  # held-out images to annotate
    confidence_threshold: float = 0.5  # for the pictures
    threads: int = 0  # torch CPU threads; 0 = one per core that is idle now (auto_threads)
    opts: list[str] = field(default_factory=list)  # config overrides: KEY VALUE ...


class _QuietConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET_PREFIXES)


def _quiet_console() -> None:
    """Drop detectron2's environment, config and model dumps (config.yaml in the train folder keeps
    the config); training progress, evaluation tables and warnings still show."""
    logger = logging.getLogger("detectron2")
    if not any(isinstance(f, _QuietConsole) for f in logger.filters):
        logger.addFilter(_QuietConsole())


def auto_threads() -> int:
    """One torch thread per core that other processes leave idle (at least one).

    OpenMP threads meet at a barrier in every op; on a machine whose cores are already busy, one
    descheduled thread stalls the others, and two threads measured several times slower here than
    one. On an idle machine this is simply the number of cores.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def _spec_for(image_size: int) -> SyntheticSpec:
    """The default look, with object sizes scaled to the image size."""
    base = SyntheticSpec()
    if image_size == base.image_size:
        return base
    k = image_size / base.image_size
    return SyntheticSpec(image_size=image_size, min_radius=max(4, round(base.min_radius * k)),
                         max_radius=max(4, round(base.max_radius * k)))


def _training_config(settings: DemoSettings, ds, train_dir: Path):
    """The demo config on the generated data, set up as ``tools/train_net.py`` sets up a run."""
    from detectron2.engine import default_setup

    from .run_config import setup_run_config

    _quiet_console()
    opts = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(train_dir), *settings.opts]
    cfg = setup_run_config(settings.config_file, opts, train=(str(ds.train_json), str(ds.train_images)),
                           test=(str(ds.val_json), str(ds.val_images)))
    # default_setup logs the arguments and the config file, and saves config.yaml in OUTPUT_DIR
    default_setup(cfg, argparse.Namespace(config_file=settings.config_file, eval_only=False, resume=True,
                                          opts=list(settings.opts)))
    return cfg


def _pictures(settings: DemoSettings, ds, weights: Path, pictures_dir: Path) -> int:
    """Annotate the first held-out images with the trained weights, as ``tools/demo.py`` would with
    ``--config-file``, ``--dataset-json`` and the same overrides; returns how many."""
    from .predictor import NASNetPredictor
    from .visualization import VisualizationDemo, expand_inputs, known_image_ids, load_class_info, load_demo_config

    count = min(settings.num_pictures, settings.num_val)
    inputs = expand_inputs([str(ds.val_images / f"{i:06d}.jpg") for i in range(count)])
    cfg = load_demo_config(settings.config_file, settings.opts, "cpu", settings.confidence_threshold)
    info = load_class_info(cfg.MODEL.ROI_HEADS.NUM_CLASSES, str(ds.val_json))
    demo = VisualizationDemo(NASNetPredictor(cfg, weights=str(weights)), info, known_image_ids(str(ds.val_json)))
    summary = demo.annotate(inputs, pictures_dir)
    print(f"{summary['num_images']} images/frames, {summary['num_detections']} detections with score >= "
          f"{settings.confidence_threshold}: pictures in {pictures_dir}/, results in {summary['results_json']}")
    return count


def run_demo(settings: DemoSettings) -> dict:
    """The five steps above; returns the summary also written to ``<output>/summary.json``."""
    import torch
    from detectron2.engine import hooks as d2_hooks

    from .trainer import NASNetTrainer, build_checkpointer

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    threads = settings.threads or auto_threads()
    torch.set_num_threads(threads)
    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    ds = make_dataset(out / "data", settings.num_train, settings.num_val, settings.seed, _spec_for(settings.image_size))
    print(f"[demo] using {threads} CPU thread(s) of {os.cpu_count()}", flush=True)
    print(f"[demo] dataset {'reused' if ds.reused else 'generated'}: {settings.num_train} train / "
          f"{settings.num_val} held-out val images of {len(SHAPES)} shape classes in {ds.root}", flush=True)

    # 2. training
    train_dir = out / "train"
    cfg = _training_config(settings, ds, train_dir)

    class DemoTrainer(NASNetTrainer):
        """No evaluation inside training: run_demo evaluates the final model once, also on re-runs."""

        def build_hooks(self):
            return [h for h in super().build_hooks() if not isinstance(h, d2_hooks.EvalHook)]

    final = train_dir / "model_final.pth"
    t_train = time.perf_counter()
    if final.is_file():
        print(f"[demo] training already finished: reusing {final}", flush=True)
    else:
        print(f"[demo] training {cfg.SOLVER.MAX_ITER} iterations on the CPU (checkpoints in {train_dir})", flush=True)
        trainer = DemoTrainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()
        del trainer
    train_seconds = time.perf_counter() - t_train

    # 3. evaluation of the final weights on the held-out images
    t_eval = time.perf_counter()
    model = NASNetTrainer.build_model(cfg)
    build_checkpointer(model, save_dir=str(train_dir)).load(str(final))
    results = NASNetTrainer.test(cfg, model)
    bbox = dict(results.get("bbox", {}))
    eval_seconds = time.perf_counter() - t_eval
    del model

    # 4. pictures
    pictures_dir = out / "pictures"
    num_pictures = _pictures(settings, ds, final, pictures_dir)

    # 5. summary
    total_seconds = time.perf_counter() - t_start
    summary = {
        "AP": bbox.get("AP"), "AP50": bbox.get("AP50"), "AP75": bbox.get("AP75"),
        "per_class_AP": {k[3:]: v for k, v in bbox.items() if k.startswith("AP-")},
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "total_seconds": round(total_seconds, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "threads": threads, "max_iter": cfg.SOLVER.MAX_ITER,
        "pictures": str(pictures_dir), "results_json": str(pictures_dir / "results.json"),
        "weights": str(final), "dataset": str(ds.root),
    }
    atomic_write_json(out / "summary.json", summary)

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    print("\n" + "=" * 72)
    print(f"NASNet-A demo detector, {len(SHAPES)} synthetic shape classes, {settings.num_val} held-out images")
    print(f"  COCO bbox AP   {fmt(summary['AP'])}    AP50 {fmt(summary['AP50'])}    AP75 {fmt(summary['AP75'])}")
    if summary["per_class_AP"]:
        print("  per class AP:  " + ", ".join(f"{k} {fmt(v)}" for k, v in summary["per_class_AP"].items()))
    print(f"  time: training {train_seconds:.0f} s, evaluation {eval_seconds:.0f} s, total {total_seconds:.0f} s "
          f"({summary['cpu_seconds']:.0f} s CPU, {threads} thread(s))")
    print(f"  pictures:      {pictures_dir}/ ({num_pictures} annotated held-out images)")
    print(f"  weights:       {final}")
    print(f"  summary:       {out / 'summary.json'}")
    print("=" * 72, flush=True)
    return summary
