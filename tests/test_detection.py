"""The detectron2 plugin: configs build, the split network wires up, real images give Instances,
training steps run, checkpoints map, bad input fails with one clear error."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2")

import nasnet_det.detection  # noqa: E402, F401  (first: registers the plugin and the compat layer)

# isort: split
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from test_detection_common import (  # noqa: E402
    COCO_MINI_TRAIN_IMAGES,
    COCO_MINI_TRAIN_JSON,
    CONFIGS,
    OVERFIT_IMAGE_IDS,
    requires_coco_mini,
    tiny_opts,
    write_coco_subset,
)

from nasnet_det.detection import (  # noqa: E402
    ConfigError,
    DatasetError,
    ImageReadError,
    NASNetDatasetMapper,
    classifier_to_detector_state_dict,
    compat,  # noqa: E402
    load_config,
    register_coco_json,
    set_drop_path_progress,
)
from nasnet_det.detection.checkpoint_mapping import BACKBONE_PREFIX, ROI_HEAD_PREFIX  # noqa: E402

MOBILE = str(CONFIGS / "nasnet_a_mobile_frcnn.yaml")
LARGE = str(CONFIGS / "nasnet_a_large_frcnn.yaml")


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def mobile_model():
    cfg = load_config(MOBILE, ["MODEL.DEVICE", "cpu"])
    return cfg, build_model(cfg).eval()


# ------------------------------------------------------------------------------ configs / build
@pytest.mark.parametrize(
    "config, channels, params",
    # totals recorded in docs/detection.md (80 classes)
    [("nasnet_a_mobile_frcnn.yaml", 1056, 9_517_437), ("nasnet_a_large_frcnn.yaml", 4032, 104_751_463)],
)
def test_shipped_config_builds_on_cpu(config, channels, params, capsys):
    cfg = load_config(str(CONFIGS / config), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    n = _num_params(model)
    with capsys.disabled():
        print(f"\n{config}: {n:,} parameters")
    assert n == params
    shape = model.backbone.output_shape()["nas4"]
    assert (shape.channels, shape.stride) == (channels, 16)
    # NASNet-A: the last cell (6 x 4F at stride 32) is as wide as the two stride-16 cells together
    assert model.roi_heads.res5.out_channels == channels
    assert model.roi_heads.pooler.output_size == (17, 17)
    # the split sits at the second reduction cell; each part holds only its own cells
    backbone_cells = model.backbone.nasnet.cells
    split = model.backbone.split_at
    assert type(backbone_cells[split]).__name__ == "Identity"
    assert type(model.roi_heads.res5.nasnet.cells[split - 1]).__name__ == "Identity"
    assert model.roi_heads.res5.nasnet.cell_names[split].startswith("reduction_cell")


def test_every_config_file_loads():
    for path in sorted(CONFIGS.glob("*.yaml")):
        if "Base" in path.name:
            continue
        cfg = load_config(str(path), ["MODEL.DEVICE", "cpu"])
        assert cfg.MODEL.ROI_HEADS.NAME == "NASNetROIHeads"


def test_tiny_large_split_matches_the_full_network():
    """Backbone + second stage on the whole image = the classifier's cells (skip_reduction on)."""
    cfg = load_config(LARGE, tiny_opts(size=64, cells=6, penultimate=96, norm="BN"))
    model = build_model(cfg).eval()
    net = nasnet_det.build_nasnet("nasnet_a", num_cells=6, penultimate_filters=96, num_classes=0,
                                  stem_multiplier=3.0, skip_reduction_layer_input=True, use_aux_head=False).eval()
    mapped, _ = classifier_to_detector_state_dict(net.state_dict(), cfg)
    incompatible = model.load_state_dict(mapped, strict=False)
    assert not [k for k in incompatible.missing_keys if k.startswith(("backbone.", "roi_heads.res5."))]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feat = model.backbone(x)["nas4"]
        ours = model.roi_heads.res5(feat)
        ref = torch.relu(net.forward_features(x))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_checkpoint_mapping_covers_every_cell(mobile_model):
    cfg, model = mobile_model
    classifier = nasnet_det.create_model("nasnet_a_mobile")
    mapped, dropped = classifier_to_detector_state_dict(
        {"module." + k: v for k, v in classifier.state_dict().items()}, cfg)
    detector = model.state_dict()
    # num_batches_tracked: a counter FrozenBN never reads (main keeps it, v0.6 has none); dropped
    cell_keys = [k for k in detector if k.startswith((BACKBONE_PREFIX, ROI_HEAD_PREFIX))
                 and not k.endswith("num_batches_tracked")]
    assert sorted(cell_keys) == sorted(mapped)
    assert all(detector[k].shape == v.shape for k, v in mapped.items())
    assert any(k.startswith("module.classifier") for k in dropped)
    assert any(k.startswith("module.aux_head") for k in dropped)


# ------------------------------------------------------------------------------ inference
@requires_coco_mini
def test_eval_forward_on_a_real_image_gives_instances(mobile_model):
    cfg, model = mobile_model
    record = json.loads(COCO_MINI_TRAIN_JSON.read_text())["images"][0]
    mapper = NASNetDatasetMapper(cfg, is_train=False)
    inputs = mapper({"file_name": str(COCO_MINI_TRAIN_IMAGES / record["file_name"]),
                     "height": record["height"], "width": record["width"], "image_id": record["id"]})
    assert tuple(inputs["image"].shape[1:]) == (600, 600)  # the fixed, non-aspect-preserving resize
    with torch.no_grad():
        out = model([inputs])[0]["instances"]
    assert isinstance(out, Instances)
    assert out.image_size == (record["height"], record["width"])
    assert {"pred_boxes", "scores", "pred_classes"} <= set(out.get_fields())
    assert len(out) <= cfg.TEST.DETECTIONS_PER_IMAGE
    if len(out):
        boxes = out.pred_boxes.tensor
        assert torch.isfinite(boxes).all() and torch.isfinite(out.scores).all()
        assert (boxes[:, 0::2] <= record["width"]).all() and (boxes[:, 1::2] <= record["height"]).all()
        assert out.pred_classes.min() >= 0 and out.pred_classes.max() < 80


def test_roi_head_chunks_crops_at_cpu_inference_with_identical_outputs(mobile_model):
    """MODEL.NASNET.ROI_CHUNK_SIZE: the crops are independent, so chunking (of the pooling and the
    cells) changes speed only (up
    to oneDNN picking another kernel for another batch size); training (batch-statistics norms) and
    tracing (export) always see the whole batch."""
    cfg, model = mobile_model
    stage = model.roi_heads.res5
    assert stage.chunk_size == cfg.MODEL.NASNET.ROI_CHUNK_SIZE == 32
    crops = torch.randn(70, sum(stage.split_channels), 17, 17, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        chunked = stage(crops)
        assert stage.chunked(crops.shape[0], crops.device)
        stage.chunk_size = 0
        try:
            whole = stage(crops)
        finally:
            stage.chunk_size = cfg.MODEL.NASNET.ROI_CHUNK_SIZE
    assert chunked.shape == whole.shape
    assert float((chunked - whole).abs().max() / whole.abs().max()) < 1e-5  # fp32 summation order only
    stage.train()
    try:
        assert not stage.chunked(crops.shape[0], crops.device)
    finally:
        stage.eval()
    # Chunked, the head pools each chunk just before its cells: same features as pooling all first.
    gen = torch.Generator().manual_seed(1)
    features = [torch.randn(2, sum(stage.split_channels), 38, 38, generator=gen)]
    boxes = []
    for n in (40, 30):
        xy = torch.rand(n, 2, generator=gen) * 400
        boxes.append(Boxes(torch.cat([xy, xy + 16 + torch.rand(n, 2, generator=gen) * 180], 1)))
    heads = model.roi_heads
    with torch.no_grad():
        fused = heads._shared_roi_transform(features, boxes)
        stage.chunk_size = 0
        try:
            pooled_first = heads._shared_roi_transform(features, boxes)
        finally:
            stage.chunk_size = cfg.MODEL.NASNET.ROI_CHUNK_SIZE
    assert fused.shape == pooled_first.shape == (70, stage.out_channels, 9, 9)
    assert float((fused - pooled_first).abs().max() / pooled_first.abs().max()) < 1e-5
    with pytest.raises(ConfigError, match="MODEL.NASNET.ROI_CHUNK_SIZE = -1.*integer >= 0"):
        load_config(MOBILE, ["MODEL.NASNET.ROI_CHUNK_SIZE", "-1"])


def test_fixed_resize_boxes_come_back_in_original_coordinates():
    """detector_postprocess rescales x and y separately, so a 1200x1200 squash maps back."""
    from detectron2.modeling.postprocessing import detector_postprocess

    inst = Instances((1200, 1200), pred_boxes=Boxes(torch.tensor([[600.0, 300.0, 1200.0, 1200.0]])),
                     scores=torch.tensor([0.9]), pred_classes=torch.tensor([0]))
    out = detector_postprocess(inst, 480, 640)
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[320.0, 120.0, 640.0, 480.0]]))


# ------------------------------------------------------------------------------ training
def _fake_batch(size: int, n: int = 1) -> list[dict]:
    batch = []
    for _ in range(n):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[size * 0.1, size * 0.2, size * 0.7, size * 0.9]]))
        inst.gt_classes = torch.tensor([3])
        batch.append({"image": torch.rand(3, size, size) * 255, "instances": inst})
    return batch


@requires_coco_mini
def test_large_config_trains_a_few_iterations_with_finite_loss():
    """The full NASNet-A Large detector (105M parameters, drop path on) on a tiny real input."""
    cfg = load_config(LARGE, ["MODEL.DEVICE", "cpu", "INPUT.FIXED_SIZE_TRAIN", "(96, 96)",
                              "MODEL.RPN.POST_NMS_TOPK_TRAIN", "8", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8"])
    model = build_model(cfg).train()
    mapper = NASNetDatasetMapper(cfg, is_train=True)
    from detectron2.data import DatasetCatalog

    name = register_coco_json("nasnet_test_large", str(COCO_MINI_TRAIN_JSON), str(COCO_MINI_TRAIN_IMAGES))
    batch = [mapper(DatasetCatalog.get(name)[0])]  # contiguous class ids from the sparse COCO ids
    assert tuple(batch[0]["image"].shape[1:]) == (96, 96)
    assert set_drop_path_progress(model, 0.5) == 2  # backbone and ROI-head networks
    assert model.roi_heads.res5.nasnet.cells[-1].current_keep_prob() < 1.0  # drop path is live
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with EventStorage(0):
        for _ in range(2):
            losses = model(batch)
            total = sum(losses.values())
            assert math.isfinite(total.item()), losses
            optimizer.zero_grad()
            total.backward()
            optimizer.step()


def test_drop_path_hook_follows_the_trainer_iteration():
    from nasnet_det.detection import DropPathScheduleHook

    cfg = load_config(LARGE, tiny_opts(size=64, cells=6, penultimate=96))
    model = build_model(cfg)

    class FakeTrainer:
        pass

    hook = DropPathScheduleHook(total_steps=100)
    hook.trainer = FakeTrainer()
    hook.trainer.model = model
    hook.trainer.iter = 25
    hook.before_step()
    cells = [c for c in model.roi_heads.res5.nasnet.cells if hasattr(c, "drop_path_progress")]
    assert cells and all(c.drop_path_progress == 0.25 for c in cells)


# ------------------------------------------------------------------------------ bad input
def test_unknown_config_key_in_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{MOBILE}"\nMODEL:\n  NASNET:\n    NUM_CELS: 6\n')
    with pytest.raises(ConfigError, match=r"bad\.yaml.*MODEL\.NASNET\.NUM_CELS"):
        load_config(str(bad))


def test_unknown_config_key_on_command_line():
    with pytest.raises(ConfigError, match="MODEL.NASNET.FILTRES"):
        load_config(MOBILE, ["MODEL.NASNET.FILTRES", "3"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")


def test_unknown_genotype_name():
    with pytest.raises(ConfigError, match=r"MODEL\.NASNET\.GENOTYPE='nasnet_z'.*unknown genotype name"):
        load_config(MOBILE, ["MODEL.NASNET.GENOTYPE", "nasnet_z"])


def test_genotype_json_with_a_bad_field(tmp_path):
    good = nasnet_det.get_genotype("nasnet_a").to_dict()
    good["normal"]["blocks"][2]["ops"][1] = "sep_conv_11x11"
    path = tmp_path / "bad_genotype.json"
    path.write_text(json.dumps(good))
    with pytest.raises(ConfigError) as err:
        load_config(MOBILE, ["MODEL.NASNET.GENOTYPE", str(path)])
    message = str(err.value)
    assert "MODEL.NASNET.GENOTYPE" in message and "normal.blocks[2].ops[1]" in message


def test_missing_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="nope.json.*does not exist"):
        register_coco_json("nasnet_test_missing", str(tmp_path / "nope.json"), str(tmp_path))


@requires_coco_mini
def test_builtin_dataset_without_files_names_the_json(monkeypatch):
    from nasnet_det.detection import check_datasets

    with pytest.raises(DatasetError, match="coco_2017_val.*json file.*DETECTRON2_DATASETS"):
        check_datasets(["coco_2017_val"]) if not Path("datasets/coco").exists() else pytest.skip("COCO present")
    with pytest.raises(DatasetError, match="not registered"):
        check_datasets(["no_such_dataset"])


@requires_coco_mini
@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_missing_or_corrupt_image_names_the_file(tmp_path, problem):
    """Registration refuses the dataset; an image that breaks after registration fails in the mapper."""
    from nasnet_det.detection import DatasetError

    images = tmp_path / "images"
    images.mkdir()
    first = json.loads(COCO_MINI_TRAIN_JSON.read_text())["images"][0]
    json_path = write_coco_subset(COCO_MINI_TRAIN_JSON, [first["id"]], tmp_path / "one.json")
    data = (COCO_MINI_TRAIN_IMAGES / first["file_name"]).read_bytes()
    broken = data[:200] if problem == "corrupt" else None  # a truncated JPEG, or no file at all
    if broken is not None:
        (images / first["file_name"]).write_bytes(broken)
    with pytest.raises(DatasetError, match=first["file_name"]):
        register_coco_json(f"nasnet_test_{problem}", str(json_path), str(images))
    (images / first["file_name"]).write_bytes(data)
    name = register_coco_json(f"nasnet_test_{problem}_late", str(json_path), str(images))
    if broken is None:
        (images / first["file_name"]).unlink()
    else:
        (images / first["file_name"]).write_bytes(broken)
    cfg = load_config(MOBILE, tiny_opts())
    from detectron2.data import DatasetCatalog

    record = DatasetCatalog.get(name)[0]
    with pytest.raises(ImageReadError, match=first["file_name"]):
        NASNetDatasetMapper(cfg, is_train=True)(record)


# ------------------------------------------------------------------------------ compat
def test_compiled_ops_stand_in_raises_only_when_used():
    from detectron2 import layers  # importable even without the compiled extension

    if compat.HAS_COMPILED_OPS:
        pytest.skip("this detectron2 has its compiled ops")
    with pytest.raises(RuntimeError, match="compiled op .* is not available"):
        layers.nms_rotated(torch.zeros(1, 5), torch.ones(1), 0.5)


def test_coco_registration_can_be_repeated(tmp_path):
    if not COCO_MINI_TRAIN_JSON.is_file():
        pytest.skip("needs ../shared/data/coco_mini")
    for _ in range(2):
        register_coco_json("nasnet_test_twice", str(COCO_MINI_TRAIN_JSON), str(COCO_MINI_TRAIN_IMAGES))
    from detectron2.data import DatasetCatalog

    subset = write_coco_subset(COCO_MINI_TRAIN_JSON, OVERFIT_IMAGE_IDS[:1], tmp_path / "one.json")
    register_coco_json("nasnet_test_twice", str(subset), str(COCO_MINI_TRAIN_IMAGES))  # replaced
    assert len(DatasetCatalog.get("nasnet_test_twice")) == 1


def test_checkpointer_refuses_non_tensor_globals_unless_allowed(tmp_path, mobile_model):
    from nasnet_det.detection import build_checkpointer
    from nasnet_det.errors import WeightsError

    _, model = mobile_model
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "iteration": 7, "extra": {"note": object.__name__},
                "cfg": Path("x")}, path)  # a non-tensor global that weights_only=True rejects
    with pytest.raises(WeightsError, match="--allow-unsafe-pickle"):
        build_checkpointer(model).load(str(path))
    loaded = build_checkpointer(model, allow_unsafe_pickle=True).load(str(path))
    assert loaded["iteration"] == 7
    with pytest.raises(WeightsError, match="broken.pth"):
        (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
        build_checkpointer(model).load(str(tmp_path / "broken.pth"))


def test_cpu_multiprocess_launch_gives_a_clear_error_where_unsupported(monkeypatch):
    from nasnet_det.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("CUDA present: several processes are supported")
    for supports_cpu_workers in (False, True):  # v0.6, main
        monkeypatch.setattr(compat, "launch_supports_cpu_workers", lambda v=supports_cpu_workers: v)
        with pytest.raises(ConfigError, match="no CUDA device" if not supports_cpu_workers else "CPU processes"):
            compat.check_launch(num_gpus=2, num_machines=1)
    compat.check_launch(num_gpus=2, num_machines=1, eval_only=True)  # main evaluates with GLOO workers
    compat.check_launch(num_gpus=1, num_machines=1)
