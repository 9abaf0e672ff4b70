"""tools/train_net.py end to end on real coco_mini images: train, --resume, --eval-only, the
COCOEvaluator numbers, clear CLI errors; and the overfitting test (boxes, sparse category ids and
evaluation line up)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

from test_detection_common import (  # noqa: E402
    COCO_MINI_TRAIN_IMAGES,
    COCO_MINI_TRAIN_JSON,
    CONFIGS,
    OVERFIT_IMAGE_IDS,
    ROOT,
    requires_coco_mini,
    tiny_opts,
    write_coco_subset,
)

import nasnet_det.detection  # noqa: E402,F401  (registers the plugin; compat first)

MOBILE = str(CONFIGS / "nasnet_a_mobile_frcnn.yaml")
pytest_plugins = ["test_detection_common"]  # its no_tensorboard fixture


def _iterations(output_dir: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (output_dir / "metrics.json").read_text().splitlines()
            if "total_loss" in line]


@requires_coco_mini
def test_train_resume_and_eval_only(tmp_path, no_tensorboard, load_tool):
    train_net = load_tool("train_net")
    data = write_coco_subset(COCO_MINI_TRAIN_JSON, OVERFIT_IMAGE_IDS[:2], tmp_path / "two.json")
    out = tmp_path / "run"
    common = ["--config-file", MOBILE, "--dataset-json", str(data), "--image-root", str(COCO_MINI_TRAIN_IMAGES)]
    opts = tiny_opts(size=96) + ["OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "2",
                                 "MODEL.ROI_HEADS.NUM_CLASSES", "2", "SOLVER.WARMUP_ITERS", "0"]
    parse = train_net.build_parser().parse_args

    train_net.main(parse(common + opts + ["SOLVER.MAX_ITER", "3"]))
    assert (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert _iterations(out)[-1] == 2

    # --resume with a longer schedule continues after the last saved iteration (2 -> 3, 4)
    trainer_args = parse(common + ["--resume"] + opts + ["SOLVER.MAX_ITER", "5"])
    cfg = train_net.setup(trainer_args)
    trainer = train_net.NASNetTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 3
    trainer.train()
    assert _iterations(out)[-1] == 4

    # --eval-only MODEL.WEIGHTS x.pth: COCOEvaluator with the official pycocotools numbers
    results = train_net.main(parse(common + ["--eval-only"] + opts + [
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")]))
    bbox = results["bbox"]
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert key in bbox
    assert any(k.startswith("AP-") for k in bbox)  # per-category AP, by class name
    assert (tmp_path / "eval" / "inference" / "nasnet_train" / "coco_instances_results.json").is_file()

    # the saved config.yaml is complete: it records the --dataset-json, so it evaluates on its own
    again = train_net.main(parse(["--config-file", str(out / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                                  str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval2")]))
    assert again["bbox"]["AP"] == pytest.approx(bbox["AP"], nan_ok=True)

    # evaluating in the training run's own folder keeps that run's config.yaml (the record of training)
    trained = (out / "config.yaml").read_bytes()
    train_net.main(parse(["--config-file", str(out / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                          str(out / "model_final.pth")]))
    assert (out / "config.yaml").read_bytes() == trained
    assert "model_final.pth" in (out / "config_eval.yaml").read_text()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_bad_input_is_one_line(tmp_path):
    """A missing dataset json and an unknown key each stop the program with one error line."""
    proc = _run_cli("--config-file", MOBILE, "--dataset-json", str(tmp_path / "missing.json"),
                    "--image-root", str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dataset json")
    assert "Traceback" not in proc.stderr


@requires_coco_mini
def test_overfit_a_handful_of_real_images(tmp_path, no_tensorboard, load_tool):
    """From scratch (no pretrained weights offline): a small NASNet-A detector learns 6 real COCO
    images with sparse category ids; COCOEvaluator on the same images must give AP50 >= 30."""
    train_net = load_tool("train_net")
    data = write_coco_subset(COCO_MINI_TRAIN_JSON, OVERFIT_IMAGE_IDS, tmp_path / "six.json")
    out = tmp_path / "overfit"
    args = train_net.build_parser().parse_args(
        ["--config-file", MOBILE, "--dataset-json", str(data), "--image-root", str(COCO_MINI_TRAIN_IMAGES)]
        + tiny_opts(size=128, cells=3, penultimate=192)
        + ["OUTPUT_DIR", str(out), "MODEL.ROI_HEADS.NUM_CLASSES", "6", "INPUT.RANDOM_FLIP", "none",
           "SOLVER.IMS_PER_BATCH", "6", "SOLVER.BASE_LR", "0.02", "SOLVER.WARMUP_ITERS", "20",
           "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.MAX_ITER", "150", "SOLVER.STEPS", "(120,)"])
    train_net.main(args)
    args.eval_only = True
    args.opts += ["MODEL.WEIGHTS", str(out / "model_final.pth")]
    bbox = train_net.main(args)["bbox"]
    print(f"overfit: AP50 {bbox['AP50']:.1f}, AP {bbox['AP']:.1f}")
    assert bbox["AP50"] >= 30
