"""pip install of depth_perception (the same package colcon builds through CMakeLists.txt)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "depth_perception"

# The torch backend (checkpoint folders, transformers models) on a vehicle that has torch:
# ``pip install .[torch]``. Training, translation, distillation and export live in the
# training subtree (training/, package depth_perception_training) and are installed on
# their own; an onboard install pulls none of them.
TORCH = ["torch>=2.3", "transformers>=4.45", "safetensors>=0.4"]

# One list of console executables: setup.py reads it and CMakeLists.txt carries the same
# list for colcon (test/onboard/test_packaging.py compares them).
CONSOLE_SCRIPTS = [
    "depth-perception = depth_perception.cli:main",
    "depth_node = depth_perception.ros.depth_node:main",
    "depth_replay = depth_perception.commands.replay:main",
    "evaluator_node = depth_perception.ros.evaluator_node:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Metric monocular depth for robots and vehicles that keeps working at "
                "night and in rain: ROS 2 nodes, inference backends, rosbag data and evaluation.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed", "datasets/splits/*/SOURCE.md",
                            "datasets/splits/*/*/*.txt.gz"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
    ],
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "rosbags>=0.10",
        "mcap>=1.6",
        "onnxruntime>=1.17",
        # ONNX metadata (every model carries its own) and engine building on the vehicle
        "onnx>=1.16",
    ],
    extras_require={
        "torch": TORCH,
        "test": ["pytest>=8", "pytest-timeout>=2.3"],
        # `depth-perception import kitti|nuscenes`: the datasets' own readers. The devkit
        # pins numpy<2; in a numpy-2 environment install it with --no-deps plus
        # pyquaternion, cachetools and scikit-learn (README, "Real data").
        "kitti": ["pykitti>=0.3.1"],
        "nuscenes": ["nuscenes-devkit>=1.1.10"],
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
