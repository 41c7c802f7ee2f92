"""pip install of depth_perception (the same package colcon builds through CMakeLists.txt)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "depth_perception"

TRAIN = [
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
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Metric monocular depth for robots and vehicles that keeps working at "
                "night and in rain: ROS 2 nodes, rosbag data, training and export tools.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
    ],
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "rosbags>=0.10",
        "mcap>=1.6",
        "onnxruntime>=1.17",
    ],
    extras_require={
        "train": TRAIN,
        "test": ["pytest>=8", "pytest-timeout>=2.3"],
    },
    entry_points={
        "console_scripts": [
            "depth-perception = depth_perception.cli:main",
            "depth_node = depth_perception.runtime.node:main",
            "evaluator_node = depth_perception.evaluation.evaluator_node:main",
        ],
    },
)
