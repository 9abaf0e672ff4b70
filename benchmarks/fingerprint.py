#!/usr/bin/env python
"""Behaviour fingerprint: what a refactoring must leave unchanged, recorded for a fixed seed.

    python benchmarks/fingerprint.py --out /tmp/fp_before
    ... refactor ...
    python benchmarks/fingerprint.py --out /tmp/fp_after --compare /tmp/fp_before

Records parameter counts, state-dict keys and logits of NASNet-A Mobile and Large (plain and
``optimize_for_inference``), a random-initialised detector's detections on a real coco_mini image,
and the trial log of a tiny search with a fixed seed. ``--compare`` prints every difference and
exits 1 if there is one (logits within 1e-5 relative; the search log must match exactly, apart
from timings).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TIMING_KEYS = {"seconds", "started", "finished", "time", "wall_s", "train_seconds", "duration_s", "host", "pid",
               "worker"}


def classifier_fingerprint(name: str, size: int, out: Path) -> dict:
    from nasnet_det.modeling import create_model
    from nasnet_det.modeling.inference import optimize_for_inference

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(x)
        fast = optimize_for_inference(model)(x)
    torch.save({"plain": plain, "fast": fast}, out / f"{name}_logits.pt")
    return {"params": sum(p.numel() for p in model.parameters()),
            "keys": sorted(create_model(name).state_dict().keys())}


def detector_fingerprint(out: Path) -> dict:
    import cv2

    import nasnet_det.detection  # noqa: F401  (registers the backbone)
    from nasnet_det.detection import load_config
    from nasnet_det.detection.predictor import NASNetPredictor

    image = sorted((SHARED / "coco_mini").rglob("*.jpg"))[0]
    cfg = load_config(str(ROOT / "configs" / "nasnet_demo_synthetic.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    instances = NASNetPredictor(cfg, weights="")(cv2.imread(str(image)))
    torch.save({"boxes": instances.pred_boxes.tensor, "scores": instances.scores,
                "classes": instances.pred_classes}, out / "detector.pt")
    return {"image": image.name, "detections": len(instances)}


def search_fingerprint(out: Path) -> list[dict]:
    folder = out / "search"
    shutil.rmtree(folder, ignore_errors=True)  # a search refuses an existing folder without --resume
    cmd = [sys.executable, str(ROOT / "tools" / "search.py"), "--config-file",
           str(ROOT / "configs" / "search" / "cpu_demo.yaml"), "--output", str(folder), "--no-progress",
           "--no-report", "num_archs", "4", "ppo.batch_size", "2", "data.train_size", "200", "data.val_size", "100",
           "executor.workers", "1"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    records = [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines() if line.strip()]
    return [_without_timings(r) for r in records]


def _without_timings(value):
    """The record with every timing field removed, at any depth (they differ run to run)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def compare(now: Path, before: Path) -> list[str]:
    problems = []
    a, b = json.loads((now / "summary.json").read_text()), json.loads((before / "summary.json").read_text())
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            problems.append(f"{key}: {str(b.get(key))[:200]} -> {str(a.get(key))[:200]}")
    for pt in sorted(before.glob("*.pt")):
        old, new = torch.load(pt), torch.load(now / pt.name)
        for key in old:
            if old[key].shape != new[key].shape or not torch.allclose(old[key].float(), new[key].float(),
                                                                      rtol=1e-5, atol=1e-5):
                problems.append(f"{pt.name}[{key}] differs")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--compare", type=Path, help="an earlier --out to compare with")
    parser.add_argument("--skip-search", action="store_true", help="omit the (minute-long) search")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {name: classifier_fingerprint(name, size, args.out)
               for name, size in (("nasnet_a_mobile", 224), ("nasnet_a_large", 331))}
    summary["detector"] = detector_fingerprint(args.out)
    if not args.skip_search:
        summary["search_log"] = search_fingerprint(args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    if args.compare:
        problems = compare(args.out, args.compare)
        if args.skip_search:
            problems = [p for p in problems if not p.startswith("search_log")]
        print("\n".join(problems) if problems else f"fingerprint matches {args.compare}")
        return 1 if problems else 0
    print(f"fingerprint written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
