"""nasnet_det: NASNet (Zoph et al. 2018) cells, search and pretraining, as a detectron2 plugin.

detectron2 itself is not on PyPI; ``make`` installs it through tools/install_detectron2.py when no
build is present (see README, "Install").
"""
from setuptools import find_packages, setup

setup(
    name="nasnet_det",
    version="0.1.0",
    description="NASNet-A backbones, architecture search and pretraining for detectron2",
    packages=find_packages(include=["nasnet_det", "nasnet_det.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "fvcore",
        "pycocotools",
        "safetensors",
        "tqdm",
        "matplotlib",
        "pyyaml",
        "tensorboard",
        "scipy",  # Kendall's tau / Spearman's rho with p-values (tools/search.py evaluate-ranking)
    ],
    # OpenCV is an extra because its distributions (opencv-python, -headless, -contrib, conda's)
    # all install the same cv2/ folder: requiring one would overwrite the one a user already has.
    extras_require={
        "opencv": ["opencv-python"],
        "ray": ["ray[default]"],
        # Exporting to and running in ONNX Runtime / OpenVINO (tools/export.py, --runtime).
        "deploy": ["onnx", "onnxruntime", "openvino"],
        "test": [
            "pytest", "pytest-timeout", "hypothesis", "tensorflow-cpu", "timm", "ray[default]", "ruff",
            "onnx", "onnxruntime", "openvino",
        ],
    },
)
