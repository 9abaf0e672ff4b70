"""Step builders: each returns a zero-argument callable that runs ONE measured unit of work.

The same builders serve the in-process alternating timer and the fresh-subprocess memory jobs
(``benchmarks.common.measure_memory`` names them as ``"benchmarks.builders:<function>"``), so
both numbers come from exactly the same code path.

Weights: "ours" vs a timm peer always carry the SAME weights: the timm model is built with a
fixed seed and its state dict is converted into ours with ``nasnet_det.weights.convert.convert_timm``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

TIMM_PEERS = {"nasnet_a_large": "nasnetalarge", "pnasnet5_large": "pnasnet5large"}


def _input(batch: int, size: int, seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


def _timm_model(timm_name: str, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(timm_name, pretrained=False)


def _randomize_bn_stats(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics so BN folding is exercised (fresh init has mean 0 / var 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)


def build_pair_models(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(ours, timm peer) with identical weights; peer is None when timm has no such model."""
    from nasnet_det.modeling import create_model

    timm_name = TIMM_PEERS.get(name)
    if timm_name is None:
        torch.manual_seed(seed)
        ours = create_model(name, use_aux_head=False)
        _randomize_bn_stats(ours, seed)
        return ours, None
    from nasnet_det.weights.convert import convert_timm

    peer = _timm_model(timm_name, seed)
    _randomize_bn_stats(peer, seed)
    ours = create_model(name, num_classes=peer.num_classes, use_aux_head=False)
    state, _report = convert_timm(peer.state_dict(), ours)
    ours.load_state_dict(state, strict=True)
    return ours, peer


def classifier_models(name: str, impl: str, optimized: bool = False, bf16: bool = False,
                      seed: int = 0) -> torch.nn.Module:
    """One classifier in eval mode: ``impl`` "ours" (optionally optimized) or "timm"."""
    ours, peer = build_pair_models(name, seed)
    if impl == "timm":
        if peer is None:
            raise ValueError(f"timm has no peer for {name}")
        return peer.eval()
    ours.eval()
    if optimized:
        from nasnet_det.modeling.inference import optimize_for_inference

        ours = optimize_for_inference(ours, bf16=bf16, inplace=True)
    return ours


def classifier(name: str, impl: str, batch: int, size: int, optimized: bool = False, bf16: bool = False,
               seed: int = 0) -> Callable[[], Any]:
    """Inference step: one forward of a ``batch`` of ``size``x``size`` images under inference_mode."""
    model = classifier_models(name, impl, optimized, bf16, seed)
    x = _input(batch, size)

    def step() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return step


def training_models(name: str, impl: str, seed: int = 0) -> torch.nn.Module:
    """A classifier in train mode with the same weights on both sides.

    Ours: no aux head (timm's nasnetalarge has none) and drop-path progress 0 (keep = 1, like timm,
    which has no drop-path by default); dropout is on in both (it costs nothing measurable).
    """
    ours, peer = build_pair_models(name, seed)
    model = peer if impl == "timm" else ours
    return model.train()


def training(name: str, impl: str, batch: int, size: int, memory_saving: bool = False, seed: int = 0,
             channels_last: bool = False) -> Callable[[], Any]:
    """One SGD-with-momentum step: zero_grad(set_to_none) -> forward -> cross-entropy -> backward -> step.

    ``channels_last`` stores the 4-D weights and the input NHWC (same math, oneDNN's faster layout).
    """
    model = training_models(name, impl, seed)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if memory_saving:
        from nasnet_det.modeling.memory import enable_memory_saving

        enable_memory_saving(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = _input(batch, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(seed + 1)
    num_classes = model.classifier.out_features if hasattr(model, "classifier") else model.num_classes
    y = torch.randint(0, num_classes, (batch,), generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if isinstance(out, tuple):
            out = out[0]
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        return float(loss)

    return step


# ---------------------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------------------
NASNET_CONFIGS = {"nasnet_mobile": "configs/nasnet_a_mobile_frcnn.yaml",
                  "nasnet_large": "configs/nasnet_a_large_frcnn.yaml",
                  "nasnet_large_lowproposals": "configs/nasnet_a_large_frcnn_lowproposals.yaml"}


def detector_cfg(which: str, size: int, proposals: int | None = None):
    """detectron2 config of a detector on CPU with random weights, testing at a fixed ``size``;
    ``proposals`` overrides the config's test-time proposal count (RPN.POST_NMS_TOPK_TEST)."""
    import nasnet_det.detection  # noqa: F401  (registers the plugin and the stand-in for detectron2's compiled ops)

    if which == "r50_c4":
        cfg = r50_c4_cfg()
    else:
        from benchmarks.common import REPO
        from nasnet_det.detection import load_config

        cfg = load_config(str(REPO / NASNET_CONFIGS[which]), freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if proposals:
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = proposals
    cfg.freeze()
    return cfg


R50_C4_ZOO = "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"


def r50_c4_cfg():
    """detectron2's model-zoo R50-C4 Faster R-CNN config.

    Read from the installed package when it ships its configs; some installs (this venv's) do not,
    and then the same model is set up from detectron2's defaults plus the model keys that
    ``Base-RCNN-C4.yaml`` and ``faster_rcnn_R_50_C4_1x.yaml`` set (GeneralizedRCNN, ResNet-50 C4,
    ``Res5ROIHeads``, RPN test top-k 6000 / 1000, no mask); the rest of those files is
    dataset/solver/train-resize settings that inference does not read.
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    try:
        from detectron2 import model_zoo

        cfg.merge_from_file(model_zoo.get_config_file(R50_C4_ZOO))
        cfg.BENCHMARK_CONFIG_SOURCE = "model_zoo"
    except (RuntimeError, ImportError, FileNotFoundError):
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.RESNETS.DEPTH = 50
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
        cfg.MODEL.RPN.IN_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
        cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
        cfg.MODEL.MASK_ON = False
        cfg.BENCHMARK_CONFIG_SOURCE = "defaults + model keys of " + R50_C4_ZOO
    return cfg


def configured_test_size(which: str) -> int:
    """The square test input a NASNet detector config asks for (INPUT.FIXED_SIZE_TEST)."""
    cfg = detector_cfg(which, 0)
    fixed = cfg.INPUT.get("FIXED_SIZE_TEST", None)
    if isinstance(fixed, str):
        fixed = eval(fixed, {"__builtins__": {}})  # the yaml stores "(600, 600)"
    return int(fixed[0]) if fixed else int(cfg.INPUT.MIN_SIZE_TEST)


def _pin_proposals(model: torch.nn.Module, count: int, seed: int, size: int) -> None:
    """Make the RPN hand exactly ``count`` proposals to the ROI heads, as a trained one does.

    With random weights the RPN's proposals are degenerate: a random-init ResNet-50's activations
    grow through its residual blocks until every box decodes to nothing (R50-C4 keeps 0 of 1000),
    and NASNet keeps an arbitrary number. The second stage would then cost nothing, while with
    trained weights on a real image the post-NMS top-k is full (R50-C4: 1000, NASNet config: 50)
    and that second stage (res5 / the last NASNet cells per ROI) is the expensive part of a C4
    detector. So the RPN still runs (its cost counts), and its output is replaced by ``count``
    fixed boxes of 16 px to half the image, the same boxes for every detector.

    The boxes are constants (drawn once per image size, for the benchmark's ``size`` x ``size``
    image before any call), so a traced export carries them as they are; their scores add 0 x the
    RPN's own scores so an export cannot prune the RPN as dead code.
    """
    from detectron2.structures import Boxes, Instances

    rpn = model.proposal_generator
    plain_forward = rpn.forward
    pinned: dict[tuple[int, int, int], torch.Tensor] = {}

    def boxes(i: int, h: int, w: int) -> torch.Tensor:
        if (i, h, w) not in pinned:
            g = torch.Generator().manual_seed(seed + i)
            wh = 16 + torch.rand(count, 2, generator=g) * (torch.tensor([w, h]) / 2 - 16).clamp_min(1)
            xy = torch.rand(count, 2, generator=g) * (torch.tensor([w, h]) - wh)
            pinned[(i, h, w)] = torch.cat([xy, xy + wh], dim=1)
        return pinned[(i, h, w)]

    boxes(0, size, size)

    def forward(images, features, gt_instances=None):
        found, losses = plain_forward(images, features, gt_instances)
        out = []
        for i, (h, w) in enumerate(images.image_sizes):
            h, w = int(h), int(w)
            inst = Instances((h, w))
            inst.proposal_boxes = Boxes(boxes(i, h, w))
            inst.objectness_logits = torch.linspace(1.0, -1.0, count) + 0 * found[i].objectness_logits.sum()
            out.append(inst)
        return out, losses

    rpn.forward = forward


def detector_model(which: str, size: int, optimized: bool = False, seed: int = 0,
                   proposals: int | None = None, bf16: bool = False, compiled: bool = False) -> torch.nn.Module:
    """A detector in eval mode whose RPN yields exactly its config's test proposal count (see ``_pin_proposals``).

    ``optimized``: ``optimize_detector_for_inference``; ``compiled`` also compiles its cells (inductor).
    """
    from detectron2.modeling import build_model

    import nasnet_det.detection  # noqa: F401  (see detector_cfg)

    torch.manual_seed(seed)
    cfg = detector_cfg(which, size, proposals)
    model = build_model(cfg).eval()
    _pin_proposals(model, cfg.MODEL.RPN.POST_NMS_TOPK_TEST, seed, size)
    if optimized and which != "r50_c4":
        from nasnet_det.modeling.inference import optimize_detector_for_inference

        optimize_detector_for_inference(model, bf16=bf16, compile=compiled)
    return model


def detector(which: str, size: int, optimized: bool = False, seed: int = 0,
             proposals: int | None = None, bf16: bool = False) -> Callable[[], Any]:
    """Inference on one ``size``x``size`` image (model-side preprocessing included, no data loading)."""
    return detector_step(detector_model(which, size, optimized, seed, proposals, bf16), size, seed)


def detector_input(size: int, seed: int = 0) -> list[dict[str, Any]]:
    """The one synthetic image every detector contender gets (values 0-255, like a decoded image)."""
    g = torch.Generator().manual_seed(seed + 7)
    image = (torch.rand(3, size, size, generator=g) * 255).float()
    return [{"image": image, "height": size, "width": size}]


def detector_step(model: Callable[[list[dict[str, Any]]], Any], size: int, seed: int = 0) -> Callable[[], Any]:
    """One call of ``model`` (a detectron2 model or an ``ExportedDetector``) on ``detector_input``."""
    inputs = detector_input(size, seed)

    def step():
        with torch.inference_mode():
            return model(inputs)

    return step


# ---------------------------------------------------------------------------------------------------
# Exports (ONNX Runtime / OpenVINO contenders; the deploy extra)
# ---------------------------------------------------------------------------------------------------
def classifier_exports(ours: torch.nn.Module, peer: torch.nn.Module | None, size: int,
                       folder: str) -> dict[str, Any]:
    """The same weights as ONNX files: ``ours`` through ``nasnet_det.deploy.export_classifier`` and
    the timm ``peer`` through the same writer (``torch.onnx.export``, TorchScript-based, opset 17,
    dynamic batch), which is what a timm user gets from ``torch.onnx.export``. Keys "ours", "timm"."""
    from pathlib import Path

    from nasnet_det.deploy import build_provenance, export_classifier
    from nasnet_det.deploy.writers import write_onnx

    shape = {"images": ["batch", 3, size, size]}
    paths = {"ours": export_classifier(ours.eval(), "onnx", Path(folder) / "ours", size,
                                       build_provenance(ours, "classifier", "", None, shape))}
    if peer is not None:
        paths["timm"] = write_onnx(peer.eval(), (torch.zeros(2, 3, size, size),), Path(folder) / "timm.onnx",
                                   {"source": f"timm {type(peer).__name__}, torch.onnx.export"},
                                   ["images"], ["logits"], {"images": {0: "batch"}, "logits": {0: "batch"}})
    return paths


# ---------------------------------------------------------------------------------------------------
# A trained detector under two proposal budgets
# ---------------------------------------------------------------------------------------------------
def proposal_budgets() -> dict[str, list[str]]:
    """The standard and the low-proposal budget as ``KEY VALUE`` overrides for any detector config.

    The keys are those whose values differ between ``nasnet_a_large_frcnn.yaml`` and
    ``nasnet_a_large_frcnn_lowproposals.yaml`` (the RPN's post-NMS counts and the sampled ROIs),
    each with that file's value: read from the shipped files, so a change there changes the
    benchmark too, and a checkpoint trained under another config is compared on the same knobs.
    """
    from benchmarks.common import REPO
    from nasnet_det.config import leaf_keys, lookup
    from nasnet_det.detection import load_config

    std, low = ({k: lookup(cfg, k) for k in leaf_keys(cfg)}
                for cfg in (load_config(str(REPO / NASNET_CONFIGS[w]))
                            for w in ("nasnet_large", "nasnet_large_lowproposals")))
    keys = sorted(k for k in std if std[k] != low[k])
    return {"standard": [x for k in keys for x in (k, str(std[k]))],
            "lowproposals": [x for k in keys for x in (k, str(low[k]))]}


def checkpoint_detector(config_file: str, weights: str, opts: list[str], images: list[str],
                        proposals_seen: list[int]) -> Callable[[], Any]:
    """Inference with trained ``weights`` on each of ``images`` in turn (one measured unit = all of
    them), through ``NASNetPredictor``: the config's test resize, the model, boxes back in image
    coordinates, as a user runs it. Unlike ``detector`` the RPN is not pinned: a trained RPN decides
    how many proposals reach the second stage, and each call appends those counts to ``proposals_seen``.
    """
    from detectron2.data.detection_utils import read_image

    from nasnet_det.detection import load_config
    from nasnet_det.detection.predictor import NASNetPredictor

    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", *opts])
    predictor = NASNetPredictor(cfg, weights)
    predictor.model.roi_heads.register_forward_pre_hook(
        lambda _module, args: proposals_seen.extend(len(p) for p in args[2]))
    arrays = [read_image(path, format="BGR") for path in images]

    def step():
        with torch.inference_mode():
            return [predictor(a) for a in arrays]

    return step
