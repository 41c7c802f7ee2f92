"""pip install of depth_perception_training: the training subtree (CUDA workstation).

Depends on the onboard package ``depth_perception`` (install that first: ``pip install
..`` from here, or ``./setup.sh`` at the repository root, which installs both). Its verbs
(``train``, ``export``, ``demo``, ...) join the ``depth-perception`` command through the
``depth_perception.commands`` entry point group.
"""
from setuptools import find_packages, setup

PACKAGE = "depth_perception_training"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Training for depth_perception: self-supervised teacher, diffusion "
                "translation, student distillation, refinement, export (ONNX/TensorRT).",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["config/*/*.yaml"]},
    install_requires=[
        "depth_perception",
        "torch>=2.3",
        "transformers>=4.45",
        "diffusers>=0.30",
        "accelerate>=0.34",
        "safetensors>=0.4",
        "onnx>=1.16",
        "onnxscript>=0.1",
        "omegaconf>=2.3",
        "tensorboard>=2.16",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    entry_points={
        "depth_perception.commands": [
            "train = depth_perception_training.commands.train",
            "export = depth_perception_training.commands.export",
            "demo = depth_perception_training.commands.demo",
            "translate = depth_perception_training.commands.translate",
        ],
    },
)
