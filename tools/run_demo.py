#!/usr/bin/env python
"""``make demo``: synthetic data -> train a small NASNet-A detector on the CPU -> mAP + pictures.

    python tools/run_demo.py --output output/demo

1. generates the synthetic shapes dataset (train + held-out val, COCO json) in <output>/data;
2. trains configs/nasnet_demo_synthetic.yaml with tools/train_net.py's machinery
   (NASNetTrainer = detectron2's DefaultTrainer) on the CPU, checkpoints in <output>/train;
3. evaluates the final model with COCOEvaluator (pycocotools) on the held-out images;
4. runs tools/demo.py on some held-out images, writing annotated pictures to <output>/pictures;
5. prints AP / AP50 and where everything is, and writes <output>/summary.json.

Running it again with the same --output reuses the dataset, resumes an interrupted training from
its last checkpoint and skips a finished one. Trailing ``KEY VALUE`` pairs override the config
(the tests use them for a seconds-long run).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

import nasnet_det  # noqa: E402,F401  (registers the backbone, ROI heads and compat layer)
from nasnet_det.data.synthetic import SHAPES, SyntheticSpec, make_dataset  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "nasnet_demo_synthetic.yaml"
# long dumps of default_setup / DefaultTrainer that would bury the demo's own output
_QUIET_PREFIXES = ("Model:\n", "Environment info:", "Running with full config", "Contents of args.config_file",
                   "Command line arguments")


def _load_tool(name: str):
    """Import tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"nasnet_det_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="output/demo", help="folder for data, checkpoints, pictures")
    p.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    p.add_argument("--num-train", type=int, default=400, help="synthetic training images")
    p.add_argument("--num-val", type=int, default=100, help="held-out synthetic images for evaluation")
    p.add_argument("--image-size", type=int, default=SyntheticSpec().image_size)
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--num-pictures", type=int, default=8, help="held-out images to run tools/demo.py on")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="for the pictures")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads; 0 = one per core that is idle now (see _auto_threads)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


class _QuietConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET_PREFIXES)


def _quiet_console() -> None:
    """Drop detectron2's environment, config and model dumps (config.yaml in the train folder keeps
    the config); training progress, evaluation tables and warnings still show."""
    logger = logging.getLogger("detectron2")
    if not any(isinstance(f, _QuietConsole) for f in logger.filters):
        logger.addFilter(_QuietConsole())


def _auto_threads() -> int:
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
    return SyntheticSpec(
        image_size=image_size, min_radius=max(4, round(base.min_radius * k)), max_radius=max(4, round(base.max_radius * k))
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    import torch

    threads = args.threads or _auto_threads()
    torch.set_num_threads(threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    ds = make_dataset(out / "data", args.num_train, args.num_val, args.seed, _spec_for(args.image_size))
    print(f"[demo] using {threads} CPU thread(s) of {os.cpu_count()}", flush=True)
    print(f"[demo] dataset {'reused' if ds.reused else 'generated'}: {args.num_train} train / {args.num_val} "
          f"held-out val images of {len(SHAPES)} shape classes in {ds.root}", flush=True)

    # 2. training, with tools/train_net.py's parser, dataset registration and setup
    train_net = _load_tool("train_net")
    from detectron2.engine import hooks as d2_hooks
    from nasnet_det.detection import NASNetTrainer, build_checkpointer

    train_dir = out / "train"
    train_args = train_net.build_parser().parse_args([
        "--config-file", args.config_file, "--resume",
        "--dataset-json", str(ds.train_json), "--image-root", str(ds.train_images),
        "--test-json", str(ds.val_json), "--test-image-root", str(ds.val_images),
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(train_dir), *args.opts,
    ])
    _quiet_console()
    cfg = train_net.setup(train_args)

    class DemoTrainer(NASNetTrainer):
        """No evaluation inside training: main() evaluates the final model once, also on re-runs."""

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

    # 4. pictures with tools/demo.py
    demo = _load_tool("demo")
    picture_inputs = [str(ds.val_images / f"{i:06d}.jpg") for i in range(min(args.num_pictures, args.num_val))]
    pictures_dir = out / "pictures"
    demo_argv = [
        "--config-file", args.config_file, "--weights", str(final), "--dataset-json", str(ds.val_json),
        "--input", *picture_inputs, "--output", str(pictures_dir), "--device", "cpu",
        "--confidence-threshold", str(args.confidence_threshold),
        *args.opts,
    ]
    rc = demo.main(demo_argv)
    if rc != 0:
        raise SystemExit(f"[demo] tools/demo.py failed with exit code {rc}")

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
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    print("\n" + "=" * 72)
    print(f"NASNet-A demo detector, {len(SHAPES)} synthetic shape classes, {args.num_val} held-out images")
    print(f"  COCO bbox AP   {fmt(summary['AP'])}    AP50 {fmt(summary['AP50'])}    AP75 {fmt(summary['AP75'])}")
    if summary["per_class_AP"]:
        print("  per class AP:  " + ", ".join(f"{k} {fmt(v)}" for k, v in summary["per_class_AP"].items()))
    print(f"  time: training {train_seconds:.0f} s, evaluation {eval_seconds:.0f} s, total {total_seconds:.0f} s "
          f"({summary['cpu_seconds']:.0f} s CPU, {threads} thread(s))")
    print(f"  pictures:      {pictures_dir}/ ({len(picture_inputs)} annotated held-out images)")
    print(f"  weights:       {final}")
    print(f"  summary:       {out / 'summary.json'}")
    print("=" * 72, flush=True)
    return summary


if __name__ == "__main__":
    main()
