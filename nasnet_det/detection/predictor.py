"""Single-image inference that preprocesses exactly as the config does, plus class-name metadata.

detectron2's ``DefaultPredictor`` resizes with ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``,
which cannot express TF's fixed (non-aspect-preserving) resize (INPUT.FIXED_SIZE_TEST). The fixed-size
configs therefore set MIN_SIZE_TEST 0 and the NASNetRCNN model applies the fixed size itself
(detection/meta_arch.py), so ``DefaultPredictor(cfg)`` and this predictor give the same boxes.
``NASNetPredictor`` takes its resize from ``build_resize_augmentations(cfg, is_train=False)``, the
same function the test data loader uses.

``ClassInfo`` answers the two questions a demo has about class index ``k`` of the model: its name
(for the Visualizer) and its category id in the dataset (for a COCO results file). detectron2 maps
the sorted category ids of a COCO json to contiguous indices 0..K-1; we apply the same rule.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, WeightsError
from .checkpoint import NASNetCheckpointer
from .config import exported_input_size
from .data import build_resize_augmentations

__all__ = ["ClassInfo", "NASNetPredictor", "WeightsError", "instances_to_coco_results"]


@dataclass(frozen=True)
class ClassInfo:
    """Names and dataset category ids of the model's classes, indexed by contiguous class index."""

    names: tuple[str, ...]
    dataset_ids: tuple[int, ...]

    @classmethod
    def from_coco_json(cls, json_file: str) -> "ClassInfo":
        """Read ``categories`` of a COCO json; index order = sorted ids, as detectron2 trains them."""
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"dataset json {json_file!r} does not exist")
        try:
            with open(json_file) as f:
                cats = json.load(f)["categories"]
            cats = sorted(((int(c["id"]), str(c["name"])) for c in cats), key=lambda c: c[0])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"dataset json {json_file!r} has no valid 'categories' list: {err}") from err
        if not cats:
            raise ValueError(f"dataset json {json_file!r} lists no categories")
        return cls(tuple(n for _, n in cats), tuple(i for i, _ in cats))

    @classmethod
    def from_dataset(cls, name: str) -> "ClassInfo":
        """From a registered detectron2 dataset (builtin COCO names included)."""
        from detectron2.data import DatasetCatalog, MetadataCatalog

        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "thing_classes") and name in DatasetCatalog.list():
            DatasetCatalog.get(name)  # COCO-json registrations fill the metadata when first loaded
        if not hasattr(meta, "thing_classes"):
            raise ValueError(f"dataset {name!r} has no thing_classes metadata (is it registered?)")
        names = tuple(meta.thing_classes)
        id_map = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        if id_map:
            inverse = {v: k for k, v in id_map.items()}
            ids = tuple(int(inverse[i]) for i in range(len(names)))
        else:
            ids = tuple(range(len(names)))
        return cls(names, ids)

    @classmethod
    def generic(cls, num_classes: int) -> "ClassInfo":
        """When no dataset is known: names ``class_0``..., ids = contiguous indices."""
        return cls(tuple(f"class_{i}" for i in range(num_classes)), tuple(range(num_classes)))

    def metadata(self):
        """A detectron2 ``Metadata`` for the Visualizer (not registered in MetadataCatalog)."""
        from detectron2.data.catalog import Metadata

        return Metadata(name="nasnet_det_predictor", thing_classes=list(self.names))


class NASNetPredictor:
    """Run a detectron2 model built from ``cfg`` on one image at a time.

    The image is resized as ``cfg`` says for testing (fixed size or shortest edge), the model gets
    the original (height, width) so its boxes come back in original image coordinates.
    ``optimize=True`` runs the NASNet parts through ``optimize_for_inference`` after loading the
    weights (BN folded into the convolutions, channels_last): same detections up to fp32
    rounding, ~1.2-1.4x faster on CPU (docs/benchmarks.md).
    ``runtime="onnxruntime"`` or ``"openvino"`` exports the loaded model to ONNX at
    INPUT.FIXED_SIZE_TEST (``nasnet_det.deploy``, the deploy extra) and runs that instead.
    """

    def __init__(self, cfg, weights: str | None = None, optimize: bool = False,
                 allow_unsafe_pickle: bool = False, runtime: str = "torch"):
        from detectron2.modeling import build_model

        self.cfg = cfg.clone()
        self.cfg.defrost()
        if weights is not None:
            self.cfg.MODEL.WEIGHTS = weights
        self.cfg.freeze()
        if runtime not in ("torch", "onnxruntime", "openvino"):
            raise ConfigError(f"runtime {runtime!r}: expected torch, onnxruntime or openvino")
        hw = (None if runtime == "torch"  # checked before the (slow) model build
              else exported_input_size(self.cfg, f"runtime {runtime}", otherwise=", or use --runtime torch"))
        path = self.cfg.MODEL.WEIGHTS
        if path and "://" not in path and not os.path.isfile(path):  # before the (slow) model build
            raise WeightsError(f"weights file {path!r} does not exist")
        self.model = build_model(self.cfg)
        self.model.eval()
        if path:
            checkpointer = NASNetCheckpointer(self.model, allow_unsafe_pickle=allow_unsafe_pickle,
                                              weights_purpose="inference", cfg=self.cfg)
            try:
                checkpointer.load(path)
            except WeightsError:
                raise
            except (OSError, RuntimeError, ValueError, KeyError) as err:
                raise WeightsError(f"cannot load weights {path!r}: {err}") from err
        if optimize:
            from nasnet_det.modeling.inference import optimize_detector_for_inference

            optimize_detector_for_inference(self.model)
        if runtime != "torch":
            from ..deploy import build_provenance
            from ..deploy.detector import ExportedDetector

            self.model = ExportedDetector.from_model(self.model.cpu(), hw, runtime, build_provenance(
                self.model, "detector", self.cfg.dump(), path or None, {"image": [3, *hw]}))
        self.min_score = None
        self._set_preprocessing()

    def _set_preprocessing(self) -> None:
        self.augmentations = build_resize_augmentations(self.cfg, is_train=False)
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT {self.input_format!r}: the predictor supports BGR and RGB")

    @classmethod
    def from_exported(cls, path: str | os.PathLike, runtime: str | None = None, threads: int | None = None,
                      min_score: float | None = None) -> "NASNetPredictor":
        """A predictor running a detector file written by ``tools/export.py``; no torch model is built.

        The file's provenance holds the config it was exported with, so the preprocessing (resize,
        channel order) is the export's. ``runtime`` None: torch for ``.pt``, onnxruntime for
        ``.onnx``. ``min_score`` drops weaker detections; the file itself returns those above its
        config's ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, so a lower one brings no more back.
        """
        import tempfile
        import warnings

        from ..deploy import read_provenance
        from ..deploy.detector import ExportedDetector
        from ..errors import DeployError
        from .config import load_config

        provenance = read_provenance(path)
        if provenance.get("kind") != "detector":
            raise DeployError(f"{str(path)!r} is a {provenance.get('kind', 'file')} export, not a detector: "
                              "export the detector with tools/export.py detector")
        with tempfile.TemporaryDirectory(prefix="nasnet_det_exported_") as folder:
            config_file = os.path.join(folder, "config.yaml")
            with open(config_file, "w", encoding="utf-8") as f:
                f.write(provenance["config"])
            cfg = load_config(config_file, ["MODEL.DEVICE", "cpu"])
        baked = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
        if min_score is not None and min_score < baked:
            warnings.warn(f"{str(path)!r} keeps detections with score >= {baked} (MODEL.ROI_HEADS.SCORE_THRESH_TEST "
                          f"when it was exported): a threshold of {min_score} brings no weaker ones back", stacklevel=2)
        if runtime is None:
            runtime = "torch" if str(path).endswith(".pt") else "onnxruntime"
        self = cls.__new__(cls)
        self.cfg = cfg
        self.model = ExportedDetector(path, exported_input_size(cfg, "exported detector"), runtime, threads=threads)
        self.min_score = min_score
        self._set_preprocessing()
        return self

    @torch.no_grad()
    def __call__(self, image: np.ndarray, image_format: str = "BGR"):
        """Detect objects in an (H, W, 3) uint8 image; returns ``Instances`` on the CPU."""
        from detectron2.data import transforms as T

        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(image.shape)}")
        if image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        T.AugmentationList(self.augmentations)(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)).astype("float32"))
        outputs = self.model([{"image": tensor, "height": height, "width": width}])
        instances = outputs[0]["instances"].to("cpu")
        return instances if self.min_score is None else instances[instances.scores >= self.min_score]


def instances_to_coco_results(instances, image_id: int, class_info: ClassInfo, **extra) -> list[dict]:
    """COCO results entries (``bbox`` in xywh, dataset category ids) for one image's detections.

    ``extra`` keys (e.g. ``file_name``) are copied into every entry; pycocotools ignores them.
    """
    if len(instances) == 0:
        return []
    boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
    scores = instances.scores.numpy().tolist()
    classes = instances.pred_classes.numpy().tolist()
    results = []
    for (x0, y0, x1, y1), score, k in zip(boxes, scores, classes):
        entry = {
            "image_id": int(image_id),
            "category_id": int(class_info.dataset_ids[k]),
            "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "score": round(float(score), 5),
        }
        entry.update(extra)
        results.append(entry)
    return results
