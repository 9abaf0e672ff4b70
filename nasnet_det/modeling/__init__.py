"""Torch modules for NASNet-style networks: TF-exact primitives, one generic cell engine, the
CIFAR / ImageNet skeletons and the model constructors (docs/modeling.md)."""
from .cell import BlockPlan, Cell
from .config import MODEL_PRESETS, NASNetConfig, calc_reduction_layers
from .drop_path import drop_path, drop_path_keep_prob
from .factorized_reduction import FactorizedReduction
from .factory import build_nasnet, create_model, list_models, resolve_network
from .network import AuxHead, NASNet
from .ops import build_op
from .same_padding import AvgPool2dSame, Conv2dSame, MaxPool2dSame, tf_same_pads

__all__ = [
    "AuxHead", "AvgPool2dSame", "BlockPlan", "Cell", "Conv2dSame", "FactorizedReduction", "MODEL_PRESETS",
    "MaxPool2dSame", "NASNet", "NASNetConfig", "build_nasnet", "build_op", "calc_reduction_layers", "create_model",
    "drop_path", "drop_path_keep_prob", "list_models", "resolve_network", "tf_same_pads",
]
