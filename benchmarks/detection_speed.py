"""Seconds per training iteration and per inference image of the shipped detection configs on CPU.

    .venv/bin/python benchmarks/detection_speed.py                      # mobile and large
    .venv/bin/python benchmarks/detection_speed.py --configs nasnet_a_mobile_frcnn.yaml --threads 1

Uses a real coco_mini image (../shared/data) at each config's fixed input size for inference and
batch 1 for training (random initialisation: speed does not depend on the weights, but the
number of proposals does, so RPN keeps its configured POST_NMS_TOPK and the ROI head its
BATCH_SIZE_PER_IMAGE). ``--train-size`` overrides the training input (NASNet-A Large at 1200x1200
needs more memory than a small shared machine has). Prints one markdown row per config; the
process's peak RSS (after inference and training; training dominates) is in the JSON line. Run one
config per process when comparing peaks, e.g. with and without ``MODEL.NASNET.MEMORY_SAVING True``.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

import nasnet_det.detection  # noqa: F401, I001  (registers the plugin)

# isort: split
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from nasnet_det.detection import NASNetDatasetMapper, load_config, register_coco_json

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT.parent / "shared" / "data" / "coco_mini"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN kernels)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(config: str, repeats: int, train_size: int | None, extra_opts: list[str], train: bool = True) -> dict:
    name = register_coco_json("bench_coco_mini", str(COCO_MINI / "annotations" / "instances_val2017.json"),
                              str(COCO_MINI / "val2017"))
    record = DatasetCatalog.get(name)[0]
    opts = ["MODEL.DEVICE", "cpu"]
    if train_size:
        opts += ["INPUT.FIXED_SIZE_TRAIN", f"({train_size}, {train_size})"]
    cfg = load_config(str(ROOT / "configs" / config), opts + extra_opts)
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())

    model.eval()
    test_input = NASNetDatasetMapper(cfg, is_train=False)(dict(record))
    with torch.no_grad():
        s_per_image = _time(lambda: model([test_input]), repeats)

    if not train:
        return {"config": config, "params": params, "test_input": list(test_input["image"].shape[1:]),
                "train_input": [0, 0], "s_per_image": round(s_per_image, 2), "s_per_iter": None,
                "threads": torch.get_num_threads(), "opts": extra_opts}
    model.train()
    train_input = NASNetDatasetMapper(cfg, is_train=True)(dict(record))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)

    def step():
        losses = model([train_input])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    with EventStorage(0):
        s_per_iter = _time(step, repeats)
    return {
        "config": config, "params": params, "test_input": list(test_input["image"].shape[1:]),
        "train_input": list(train_input["image"].shape[1:]), "s_per_image": round(s_per_image, 2),
        "s_per_iter": round(s_per_iter, 2), "threads": torch.get_num_threads(), "opts": extra_opts,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["nasnet_a_mobile_frcnn.yaml", "nasnet_a_large_frcnn.yaml"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--train-size", type=int, nargs="*", default=None,
                        help="training input per config (0 = the config's own), e.g. --train-size 0 600")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("opts", nargs="*", help="config overrides KEY VALUE (e.g. RPN.POST_NMS_TOPK_TEST 5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = args.train_size or [0] * len(args.configs)
    print("| config | parameters | inference input | s/image | training input | s/iter (batch 1) | threads |")
    print("|---|---|---|---|---|---|---|")
    for config, size in zip(args.configs, sizes):
        r = measure(config, args.repeats, size or None, args.opts, train=not args.no_train)
        print(f"| {r['config']} | {r['params']:,} | {r['test_input'][0]}x{r['test_input'][1]} | {r['s_per_image']} "
              f"| {r['train_input'][0]}x{r['train_input'][1]} | {r['s_per_iter']} | {r['threads']} |", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
