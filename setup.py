"""Installs sephnet and its portable detectron2 core from PyPI dependencies only.

detectron2 and torchvision are optional: sephnet uses detectron2 when it imports and
its own portable core (``sephnet.d2``) otherwise; torchvision's ops are used only when
they import and run.
"""
from setuptools import find_packages, setup

setup(
    name="sephnet",
    version="0.1.0",
    description="Decoupled ('seph') Mask R-CNN FPN heads and ablations as a detectron2 project",
    python_requires=">=3.9",
    packages=find_packages(include=["sephnet", "sephnet.*"]),
    install_requires=[
        "torch>=2.0",
        "numpy",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.2",
        "opencv-python-headless>=4.5",
        "Pillow",
        "tabulate",
        "tqdm",
        "termcolor",
        "tensorboard",
        "matplotlib",
        "pyyaml",
        "yacs",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist", "onnx", "onnxruntime"],
        "fast-eval": ["faster-coco-eval"],
        # sephnet.tools.export_model --format onnx (checked with onnxruntime)
        "export": ["onnx", "onnxruntime"],
    },
)
