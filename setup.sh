#!/usr/bin/env bash
# One setup command: creates ./.venv with the onboard package (with its torch and test
# extras), the training subtree (training/, depth_perception_training),
# CPU torch (unless told otherwise), the ROS 2 wheels from PyPI when no ROS 2 is sourced,
# and the package's msg/ interfaces. A second run with nothing changed returns at once.
#
#   ./setup.sh                              # CPU machine, pip-only ROS 2
#   DEPTH_PERCEPTION_TORCH=keep ./setup.sh  # keep the torch already in .venv (CUDA build)
#   VENV=/path/to/venv ./setup.sh           # another venv location
#   ROS_RELEASE=jazzy VENV=.venv-jazzy ./setup.sh   # ROS 2 Jazzy wheels (default: kilted)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
TORCH_MODE=${DEPTH_PERCEPTION_TORCH:-cpu}   # cpu | keep
PY=${PYTHON:-python3}
ROS_RELEASE=${ROS_RELEASE:-kilted}          # kilted | jazzy (PyPI wheels; ignored when ROS 2 is sourced)

say() { printf '[setup] %s\n' "$*"; }

# A ROS 2 installation is "sourced" when rclpy imports in the system Python.
ros_sourced=0
if [ -n "${ROS_DISTRO:-}" ] && "$PY" -c "import rclpy" >/dev/null 2>&1; then
  ros_sourced=1
fi

inputs_hash() {
  { cat setup.py training/setup.py setup.sh constraints-cpu.txt package.xml CMakeLists.txt msg/*.msg \
        scripts/build_interfaces.sh 2>/dev/null
    echo "torch=$TORCH_MODE ros=$ros_sourced ${ROS_DISTRO:-} release=$ROS_RELEASE"; } | sha256sum | cut -d' ' -f1
}
STAMP=$VENV/.depth_perception_setup
want=$(inputs_hash)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VENV/bin/python" -c "import depth_perception, depth_perception_training, rclpy, torch" >/dev/null 2>&1; then
  say "up to date ($VENV); nothing to do"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ $ros_sourced = 1 ]; then
    say "ROS 2 $ROS_DISTRO is sourced: venv sees its rclpy and message packages"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

constraints=()
case "$TORCH_MODE" in
  cpu)
    say "installing CPU torch (constraints-cpu.txt)"
    "${PIP[@]}" -c constraints-cpu.txt torch
    constraints=(-c constraints-cpu.txt) ;;
  keep)
    "$VENV/bin/python" -c "import torch" 2>/dev/null \
      || { say "DEPTH_PERCEPTION_TORCH=keep but no torch in $VENV: install your CUDA torch first"; exit 1; }
    say "keeping $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')" ;;
  *) say "DEPTH_PERCEPTION_TORCH must be cpu or keep, not '$TORCH_MODE'"; exit 1 ;;
esac

if [ $ros_sourced = 0 ]; then
  # ros-<release>-* are meta packages pinning the ros-* wheels of that release.
  # Jazzy has no ament_cmake_ros_core: its ament_cmake_ros carries the same CMake code
  # and finds the gmock/gtest/pytest helpers at configure time; Jazzy's rosidl_generator_py
  # needs python_cmake_module.
  case "$ROS_RELEASE" in
    kilted) prefix=ros-kilted-; extra=(ros-kilted-ament-cmake-ros-core) ;;
    jazzy)  prefix=ros-jazzy-; extra=(ros-jazzy-ament-cmake-ros ros-jazzy-ament-cmake-gmock
                                     ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest
                                     ros-jazzy-python-cmake-module) ;;
    *) say "ROS_RELEASE must be kilted or jazzy, not '$ROS_RELEASE'"; exit 1 ;;
  esac
  say "no ROS 2 sourced: installing the ROS 2 $ROS_RELEASE wheels from PyPI"
  wheels=()
  for w in rclpy sensor-msgs std-msgs geometry-msgs nav-msgs diagnostic-msgs rmw-fastrtps-cpp \
           lifecycle-msgs rosgraph-msgs ament-cmake ament-cmake-python ament-package \
           rosidl-default-generators rosidl-core-generators ament-cmake-include-directories; do
    wheels+=("$prefix$w")
  done
  wheels[0]="${prefix}rclpy[fastrtps]"
  "${PIP[@]}" "${constraints[@]}" "${wheels[@]}" "${extra[@]}" catkin_pkg
elif [ -n "${ROS_DISTRO:-}" ] && [ "$ROS_DISTRO" != "$ROS_RELEASE" ]; then
  say "ROS 2 $ROS_DISTRO is sourced: using it (ROS_RELEASE=$ROS_RELEASE ignored)"
fi

say "installing depth_perception[torch,test] (onboard) and depth_perception_training (training/)"
"${PIP[@]}" "${constraints[@]}" -e ".[torch,test]"
"${PIP[@]}" "${constraints[@]}" -e ./training
# The dataset devkits the import tests read through (extras kitti, nuscenes). The nuScenes
# devkit pins numpy<2: install it without its pins, with the modules it imports.
say "installing the dataset devkits (pykitti, nuscenes-devkit)"
"${PIP[@]}" "${constraints[@]}" pykitti scikit-learn pyquaternion cachetools
"${PIP[@]}" --no-deps "nuscenes-devkit>=1.1.10"

if [ -x scripts/build_interfaces.sh ]; then
  say "building msg/ interfaces"
  VENV="$VENV" ROS_SOURCED=$ros_sourced scripts/build_interfaces.sh
fi

"$VENV/bin/python" -c "import depth_perception, depth_perception_training, rclpy, torch; print('[setup] ok: torch', torch.__version__)"
echo "$want" > "$STAMP"
