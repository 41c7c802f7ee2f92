"""depth_perception: metric monocular depth for robots and vehicles, day and night.

The runtime half (``depth_perception.runtime``) turns camera frames into metric depth
images and point clouds; the training half (``depth_perception_training.train``) learns the
models from recorded rosbags. Importing this package has no side effects: no network,
no ROS initialisation, no heavy imports.
"""
from pkgutil import extend_path

# The interfaces generated from msg/ (``depth_perception.msg``) may be installed in a
# different prefix than this source tree (pip-only installs build them with cmake
# into their own prefix). Extending the package path lets both halves be found.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
