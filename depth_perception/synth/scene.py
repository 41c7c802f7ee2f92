"""Procedural street scene, vehicle trajectory and a vectorised numpy ray caster.

Pure compute (numpy + OpenCV, no ROS): renders camera frames (RGB and ground-truth
z-depth) and LiDAR scans of one deterministic street for several weather/lighting
conditions. :mod:`depth_perception.synth` writes them into rosbag2 files.

Geometry (``odom`` frame, REP 103: x forward along the street, y left, z up):

* the road plane z = 0 (two 3.5 m lanes around y = 0, parking strips, sidewalks),
* axis-aligned boxes: buildings on both sides with varied setbacks and gaps, parked
  cars, a few oncoming (moving) cars, lamp posts with lamp heads,
* sky where nothing is hit (NaN depth).

Appearance is a function of the surface point in the object's own coordinates
(asphalt noise, lane markings, bricks, windows, per-object colours), so a surface
looks the same from every viewpoint: day-clear shading is Lambertian with a fixed sun
and sky ambient, which keeps neighbouring frames photometrically consistent. Texture
patterns are box-filtered over the pixel footprint (analytic anti-aliasing), so
detail fades instead of aliasing in the distance.

Conditions share geometry and trajectory and differ only in shading:

* ``day-clear``: sun + sky, no noise;
* ``night``: dark ambient, headlight cones from the vehicle, street-light pools under
  the lamps, lit windows, sensor gain noise, dark sky;
* ``rain``: overcast light, darker wet road with sky reflections in puddles, fog
  (contrast loss), rain streaks, slight blur;
* ``snow``: overcast, white ground cover away from the wheel tracks, falling flakes.

The vehicle (``base_link`` on the road under the rear axle) drives along +x at about
``speed`` m/s in the right lane, weaving gently: y = lane_y + a sin(2 pi x / L),
heading along the path (yaw = atan(dy/dx), a couple of degrees). The camera is 1.5 m
above the road looking forward, the LiDAR 1.8 m up, both on ``base_link``.

Camera appearance: texture patterns are box-filtered over each pixel's footprint, so
one sample per pixel suffices inside surfaces; pixels on silhouettes (a neighbour sees
another surface) are supersampled on a sub-pixel grid. Ground-truth depth is the
z-depth at the pixel centre.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from depth_perception.camera import Intrinsics

logger = logging.getLogger(__name__)

CONDITIONS = ("day-clear", "night", "rain", "snow")

# Object kinds of the boxes.
BUILDING, CAR, MOVING_CAR, POLE, LAMP = 0, 1, 2, 3, 4
GROUND, SKY = -1, -2

# Street layout across y (metres, symmetric): lanes, parking strip, sidewalk.
LANE_WIDTH = 3.5
CARRIAGEWAY_HALF = LANE_WIDTH  # |y| < 3.5: two lanes, one each side of y = 0
PARKING_OUTER = 5.7  # parking strip 3.5 < |y| < 5.7
SIDEWALK_OUTER = 8.7  # sidewalk 5.7 < |y| < 8.7; buildings start at or behind it
SEGMENT_LENGTH = 24.0  # scene generated in segments along x, one RNG per segment

# Optical frame axes expressed in base_link (x right = -y_base, y down = -z_base,
# z forward = x_base): columns of R_base_optical.
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic drive (all lengths in metres, angles in degrees).

    ``size`` is (width, height) of the camera image; the focal length is
    ``focal_factor * width`` for both axes (square pixels; 0.58 is KITTI-like, about
    81 deg horizontal field of view) with the principal point at the image centre.
    """

    size: tuple[int, int] = (640, 192)
    seed: int = 0
    frame_rate: float = 10.0
    speed: float = 10.0
    lane_y: float = -LANE_WIDTH / 2
    sway_amplitude: float = 0.4  # lateral weave in the lane (m)
    sway_wavelength: float = 60.0  # m driven per weave (6 s at 10 m/s)
    focal_factor: float = 0.58
    supersample: int = 2  # sub-pixel samples per axis on silhouette pixels
    camera_xyz: tuple[float, float, float] = (1.5, 0.0, 1.5)  # base_link -> camera
    lidar_xyz: tuple[float, float, float] = (0.8, 0.0, 1.8)  # base_link -> lidar
    lidar_time_offset: float = 0.004  # s, LiDAR clock vs camera clock
    lidar_beams: int = 32
    lidar_elevation: tuple[float, float] = (-25.0, 15.0)
    lidar_azimuth_step: float = 0.5
    lidar_min_range: float = 0.5
    lidar_max_range: float = 80.0
    ground_extent: float = 300.0  # ground ends this far beyond the drive (sky behind)
    moving_car_probability: float = 0.25  # per 24 m segment
    start_time_ns: int = 1_700_000_000 * 1_000_000_000

    def __post_init__(self):
        width, height = self.size
        if int(width) < 8 or int(height) < 8:
            raise ValueError(f"image size {width}x{height} too small (need at least 8x8)")
        if self.frame_rate <= 0 or self.speed < 0:
            raise ValueError(f"frame_rate must be > 0 and speed >= 0, got "
                             f"{self.frame_rate} and {self.speed}")
        if self.sway_wavelength <= 0:
            raise ValueError(f"sway_wavelength must be > 0, got {self.sway_wavelength}")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")
        if self.lidar_beams < 1 or self.lidar_azimuth_step <= 0:
            raise ValueError("lidar_beams must be >= 1 and lidar_azimuth_step > 0")

    @property
    def intrinsics(self) -> Intrinsics:
        width, height = int(self.size[0]), int(self.size[1])
        f = self.focal_factor * width
        return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


# --------------------------------------------------------------------------------------
# Small geometry helpers
# --------------------------------------------------------------------------------------

def yaw_matrix(yaw: float) -> np.ndarray:
    """[3,3] rotation about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_transform(rotation: np.ndarray, translation) -> np.ndarray:
    """[4,4] homogeneous transform from [3,3] rotation and [3] translation."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --------------------------------------------------------------------------------------
# Procedural texture primitives (world-space, vectorised, footprint-filtered)
# --------------------------------------------------------------------------------------

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)


def cell_hash(ix: np.ndarray, iy: np.ndarray, seed) -> np.ndarray:
    """Hash of integer lattice cells -> float64 in [0, 1). ``seed`` scalar or array."""
    h = (np.asarray(ix, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         ^ np.asarray(iy, dtype=np.int64).astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)
         ^ (np.atleast_1d(np.asarray(seed, dtype=np.int64)).astype(np.uint64)
            + np.uint64(0x632BE59BD9B4E019)) * np.uint64(0x8CB92BA72F3D8DD7))
    h = h ^ (h >> np.uint64(33))
    h = h * _M1
    h = h ^ (h >> np.uint64(33))
    h = h * _M2
    h = h ^ (h >> np.uint64(33))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(s: np.ndarray, q: np.ndarray, scale: float, seed,
                aspect: float = 1.0) -> np.ndarray:
    """Smooth 2D value noise in [0, 1): lattice spacing ``scale * aspect`` along s and
    ``scale`` along q (metres)."""
    x = s / (scale * aspect)
    y = q / scale
    ix = np.floor(x)
    iy = np.floor(y)
    fx = _smoothstep(0.0, 1.0, x - ix)
    fy = _smoothstep(0.0, 1.0, y - iy)
    ix = ix.astype(np.int64)
    iy = iy.astype(np.int64)
    a = cell_hash(ix, iy, seed)
    b = cell_hash(ix + 1, iy, seed)
    c = cell_hash(ix, iy + 1, seed)
    d = cell_hash(ix + 1, iy + 1, seed)
    return (a + (b - a) * fx) * (1.0 - fy) + (c + (d - c) * fx) * fy


def detail_weight(scale: float, footprint: np.ndarray) -> np.ndarray:
    """1 where a pattern of period ``scale`` spans >= 2 pixels, fading to 0 at 1 pixel."""
    return np.clip(scale / np.maximum(footprint, 1e-9) - 1.0, 0.0, 1.0)


def fractal_noise(s, q, footprint, scales, amplitudes, seed, aspect: float = 1.0,
                  footprint_q=None) -> np.ndarray:
    """Zero-mean sum of value-noise octaves, each faded out where it would alias.

    With ``aspect`` != 1 the noise is stretched along s; ``footprint`` is then the pixel
    extent along s and ``footprint_q`` along q (both default to ``footprint``).
    """
    out = np.zeros(np.shape(s), dtype=np.float64)
    fq = footprint if footprint_q is None else footprint_q
    for k, (scale, amp) in enumerate(zip(scales, amplitudes)):
        w = np.minimum(detail_weight(scale * aspect, footprint), detail_weight(scale, fq))
        idx = np.nonzero(w > 0)[0]
        if len(idx) == 0:
            continue
        octave_seed = np.asarray(seed) * 7 + k
        if np.ndim(octave_seed):
            octave_seed = octave_seed[idx]
        out[idx] += amp * w[idx] * (value_noise(s[idx], q[idx], scale, octave_seed, aspect)
                                    - 0.5)
    return out


def band_coverage(x: np.ndarray, lo: float, hi: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of the pixel footprint [x - fp/2, x + fp/2] inside the band [lo, hi]."""
    fp = np.maximum(footprint, 1e-6)
    a = np.clip(x - fp / 2 - lo, 0.0, hi - lo)
    b = np.clip(x + fp / 2 - lo, 0.0, hi - lo)
    return np.clip((b - a) / fp, 0.0, 1.0)


def periodic_coverage(x: np.ndarray, period, lo, hi, footprint: np.ndarray) -> np.ndarray:
    """Fraction of the footprint inside the repeating band ``lo <= x mod period < hi``.

    Exact box filter: difference of the integral of the periodic indicator. ``period``,
    ``lo``, ``hi`` may be arrays (per object) broadcasting with ``x``.
    """
    fp = np.maximum(footprint, 1e-6)
    width = hi - lo

    def integral(z):
        k = np.floor(z / period)
        return k * width + np.clip(z - k * period - lo, 0.0, width)

    return np.clip((integral(x + fp / 2) - integral(x - fp / 2)) / fp, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# Trajectory
# --------------------------------------------------------------------------------------

class Trajectory:
    """Closed-form vehicle motion along +x, weaving gently in its lane.

    x = v t, y = lane_y + a sin(k x) with k = 2 pi / wavelength, heading along the path
    (yaw = atan(a k cos(k x))). The weave is a function of the distance driven, so a
    vehicle with speed 0 stands still.
    """

    def __init__(self, config: SynthConfig):
        self.speed = float(config.speed)
        self.lane_y = float(config.lane_y)
        self.amplitude = float(config.sway_amplitude)
        self.k = 2.0 * math.pi / float(config.sway_wavelength)

    def position(self, t: float) -> np.ndarray:
        """[3] base_link origin in odom at time t (seconds from the first frame)."""
        x = self.speed * t
        return np.array([x, self.lane_y + self.amplitude * math.sin(self.k * x), 0.0])

    def yaw(self, t: float) -> float:
        return math.atan(self.amplitude * self.k * math.cos(self.k * self.speed * t))

    def T_odom_base(self, t: float) -> np.ndarray:
        """[4,4] base_link -> odom (X_odom = T @ X_base)."""
        return make_transform(yaw_matrix(self.yaw(t)), self.position(t))

    def twist(self, t: float) -> tuple[float, float]:
        """(forward speed m/s, yaw rate rad/s) in base_link at time t."""
        x = self.speed * t
        slope = self.amplitude * self.k * math.cos(self.k * x)  # dy/dx
        curvature = -self.amplitude * self.k ** 2 * math.sin(self.k * x)  # d(slope)/dx
        speed = self.speed * math.sqrt(1.0 + slope * slope)
        yaw_rate = curvature * self.speed / (1.0 + slope * slope)
        return speed, yaw_rate


# --------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------

_BUILDING_COLOURS = np.array([
    [0.45, 0.18, 0.12],  # red brick
    [0.55, 0.32, 0.20],  # brown brick
    [0.72, 0.66, 0.52],  # beige plaster
    [0.55, 0.55, 0.55],  # grey concrete
    [0.80, 0.78, 0.74],  # white plaster
    [0.42, 0.48, 0.55],  # blue-grey
    [0.65, 0.52, 0.30],  # ochre
])
_CAR_COLOURS = np.array([
    [0.70, 0.05, 0.04], [0.05, 0.12, 0.45], [0.80, 0.80, 0.80], [0.06, 0.06, 0.06],
    [0.40, 0.42, 0.45], [0.08, 0.30, 0.12], [0.75, 0.60, 0.10], [0.30, 0.10, 0.35],
])


@dataclass
class Scene:
    """Axis-aligned boxes in odom. Arrays have one row per box.

    lo, hi: [B,3] corners at t = 0; velocity: [B] along x (m/s, moving cars only);
    kind: [B]; colour: [B,3] linear albedo; params: [B,4] (floor height, window
    period, brick flag, texture seed); light positions: [L,3] street-lamp bulbs.
    """

    lo: np.ndarray
    hi: np.ndarray
    velocity: np.ndarray
    kind: np.ndarray
    colour: np.ndarray
    params: np.ndarray
    lamps: np.ndarray
    seed: int
    x_range: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def generate(cls, seed: int, x_start: float, x_end: float,
                 moving_car_probability: float = 0.25) -> "Scene":
        """Street from x_start to x_end. Segment i of 24 m draws from RNG (seed, i)."""
        boxes: list[tuple] = []  # (lo, hi, velocity, kind, colour, params)
        lamps: list[tuple] = []
        first = int(math.floor(x_start / SEGMENT_LENGTH))
        last = int(math.ceil(x_end / SEGMENT_LENGTH))
        for segment in range(first, last):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, segment + 1_000_000])
            x0 = segment * SEGMENT_LENGTH
            for side in (1.0, -1.0):
                cls._buildings(rng, boxes, x0, side)
                cls._parked_cars(rng, boxes, x0, side)
                cls._lamp_post(rng, boxes, lamps, x0, side)
            if rng.random() < moving_car_probability:
                length, width, height = rng.uniform(4.0, 4.8), 1.8, rng.uniform(1.4, 1.6)
                xc = x0 + rng.uniform(0.0, SEGMENT_LENGTH)
                yc = LANE_WIDTH / 2 + rng.uniform(-0.2, 0.2)
                boxes.append(((xc - length / 2, yc - width / 2, 0.2),
                              (xc + length / 2, yc + width / 2, 0.2 + height),
                              -rng.uniform(7.0, 11.0), MOVING_CAR,
                              _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))],
                              (0.0, 0.0, 0.0, rng.integers(1 << 30))))
        lo = np.array([b[0] for b in boxes], dtype=np.float64).reshape(-1, 3)
        hi = np.array([b[1] for b in boxes], dtype=np.float64).reshape(-1, 3)
        return cls(lo=lo, hi=hi,
                   velocity=np.array([b[2] for b in boxes], dtype=np.float64),
                   kind=np.array([b[3] for b in boxes], dtype=np.int64),
                   colour=np.array([b[4] for b in boxes], dtype=np.float64).reshape(-1, 3),
                   params=np.array([b[5] for b in boxes], dtype=np.float64).reshape(-1, 4),
                   lamps=np.array(lamps, dtype=np.float64).reshape(-1, 3),
                   seed=int(seed), x_range=(float(x_start), float(x_end)))

    @staticmethod
    def _buildings(rng, boxes, x0, side):
        x = x0
        end = x0 + SEGMENT_LENGTH
        while x < end - 2.0:
            length = min(rng.uniform(8.0, 20.0), end - x)
            if rng.random() < 0.15:  # gap: an empty lot with a building far behind
                setback = rng.uniform(18.0, 30.0)
            else:
                setback = rng.uniform(0.0, 6.0)
            depth = rng.uniform(8.0, 16.0)
            height = rng.uniform(6.0, 24.0)
            near = SIDEWALK_OUTER + setback
            y_lo, y_hi = (near, near + depth) if side > 0 else (-near - depth, -near)
            colour_id = rng.integers(len(_BUILDING_COLOURS))
            colour = _BUILDING_COLOURS[colour_id] * rng.uniform(0.85, 1.15)
            brick = 1.0 if colour_id in (0, 1) or rng.random() < 0.2 else 0.0
            params = (rng.uniform(3.0, 3.6), rng.uniform(2.4, 3.8), brick,
                      rng.integers(1 << 30))
            boxes.append(((x, y_lo, 0.0), (x + length, y_hi, height), 0.0, BUILDING,
                          np.clip(colour, 0.02, 0.95), params))
            x += length + (rng.uniform(0.5, 3.0) if rng.random() < 0.4 else 0.0)

    @staticmethod
    def _parked_cars(rng, boxes, x0, side):
        for slot in range(4):
            if rng.random() > 0.45:
                continue
            length, width, height = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9), \
                rng.uniform(1.35, 1.65)
            xc = x0 + slot * 6.0 + 3.0 + rng.uniform(-0.4, 0.4)
            yc = side * (4.6 + rng.uniform(-0.15, 0.15))
            boxes.append(((xc - length / 2, yc - width / 2, 0.2),
                          (xc + length / 2, yc + width / 2, 0.2 + height), 0.0, CAR,
                          _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
                          * rng.uniform(0.8, 1.1), (0.0, 0.0, 0.0, rng.integers(1 << 30))))

    @staticmethod
    def _lamp_post(rng, boxes, lamps, x0, side):
        xp = x0 + (2.0 if side > 0 else 14.0) + rng.uniform(-0.5, 0.5)
        yp = side * 6.2
        grey = np.array([0.30, 0.31, 0.33])
        boxes.append(((xp - 0.09, yp - 0.09, 0.0), (xp + 0.09, yp + 0.09, 7.0), 0.0, POLE,
                      grey, (0.0, 0.0, 0.0, rng.integers(1 << 30))))
        # Arm over the road and the lamp head under its end.
        arm_end = yp - side * 1.8
        y_lo, y_hi = sorted((yp, arm_end))
        boxes.append(((xp - 0.05, y_lo, 6.9), (xp + 0.05, y_hi, 7.0), 0.0, POLE, grey,
                      (0.0, 0.0, 0.0, rng.integers(1 << 30))))
        boxes.append(((xp - 0.35, arm_end - 0.15, 6.75), (xp + 0.35, arm_end + 0.15, 6.9), 0.0,
                      LAMP, np.array([0.85, 0.85, 0.80]), (0.0, 0.0, 0.0, 0)))
        lamps.append((xp, arm_end, 6.7))

    def boxes_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """([B,3] lo, [B,3] hi) at time t (moving cars advanced along x)."""
        shift = np.zeros_like(self.lo)
        shift[:, 0] = self.velocity * t
        return self.lo + shift, self.hi + shift


# --------------------------------------------------------------------------------------
# Ray casting
# --------------------------------------------------------------------------------------

_S_AXIS = np.array([1, 0, 0])  # texture s axis for a face whose normal is along x, y, z
_Q_AXIS = np.array([2, 2, 1])


@dataclass
class Hits:
    """First intersections of N rays ``origin + t * dirs``.

    t: [N] ray parameter (inf for sky); obj: [N] box index, GROUND or SKY;
    axis: [N] normal axis (0, 1, 2); sign: [N] +-1 normal direction; point: [N,3] odom;
    local: [N,3] point in the object's coordinates (box corner at origin; world for
    the ground); s, q: [N] 2D texture coordinates on the face.
    """

    t: np.ndarray
    obj: np.ndarray
    axis: np.ndarray
    sign: np.ndarray
    point: np.ndarray
    local: np.ndarray
    s: np.ndarray
    q: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """[N,3] unit normals (zero for sky)."""
        n = np.zeros((len(self.t), 3))
        hit = self.obj != SKY
        n[np.nonzero(hit)[0], self.axis[hit]] = self.sign[hit]
        return n


def raycast(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            ground_x: tuple[float, float], t_max: float = np.inf, near: float = 1e-3,
            pixels: tuple[np.ndarray, np.ndarray] | None = None,
            windows: np.ndarray | None = None) -> Hits:
    """Intersect rays with the ground plane z = 0 and axis-aligned boxes.

    origin: [3] (outside every box, above the ground); dirs: [N,3] ray directions (any
    length: t is measured in units of the direction vector); lo, hi: [B,3] box corners
    (only boxes that can be hit need to be passed). Ground hits with x outside
    ``ground_x`` are dropped (the world ends there).

    Culling (optional): ``pixels`` = ([N] row, [N] col) image pixel of each ray, sorted
    by row, and ``windows`` [B,4] (row0, row1, col0, col1) from :func:`box_windows`:
    box b is only tested against rays whose pixel lies in its window.
    """
    origin = np.asarray(origin, dtype=np.float64)
    dirs = np.asarray(dirs, dtype=np.float64)
    n = len(dirs)
    comp = [np.ascontiguousarray(dirs[:, k]) for k in range(3)]  # structure of arrays
    with np.errstate(divide="ignore"):
        inv = [1.0 / c for c in comp]
    best_t = np.full(n, np.inf)
    best_obj = np.full(n, SKY, dtype=np.int64)

    # 1. Ground plane z = 0 (hit from above).
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(comp[2] < 0, -origin[2] * inv[2], np.inf)
        gx = origin[0] + tg * comp[0]
    ground = np.isfinite(tg) & (tg > near) & (tg < t_max) & (gx >= ground_x[0]) \
        & (gx <= ground_x[1])
    best_t[ground] = tg[ground]
    best_obj[ground] = GROUND

    # 2. Boxes, slab method on the rays of the box's window, keeping the nearest entry.
    rows, cols = pixels if pixels is not None else (None, None)
    for b in range(len(lo)):
        if windows is not None and rows is not None:
            r0, r1, c0, c1 = (int(w) for w in windows[b])
            if r1 <= r0 or c1 <= c0:
                continue
            a, z = np.searchsorted(rows, [r0, r1])
            cc = cols[a:z]
            sel = np.nonzero((cc >= c0) & (cc < c1))[0] + a
            if len(sel) == 0:
                continue
            inv_b = [v[sel] for v in inv]
        else:
            sel = slice(None)
            inv_b = inv
        with np.errstate(invalid="ignore"):
            t_near = np.full(len(inv_b[0]), -np.inf)
            t_far = np.full(len(inv_b[0]), np.inf)
            for k in range(3):
                ta = (lo[b, k] - origin[k]) * inv_b[k]
                tb = (hi[b, k] - origin[k]) * inv_b[k]
                np.maximum(t_near, np.minimum(ta, tb), out=t_near)
                np.minimum(t_far, np.maximum(ta, tb), out=t_far)
            hit = (t_near <= t_far) & (t_near > near) & (t_near < best_t[sel]) \
                & (t_near < t_max)
        if isinstance(sel, slice):
            best_t[hit] = t_near[hit]
            best_obj[hit] = b
        else:
            best_t[sel[hit]] = t_near[hit]
            best_obj[sel[hit]] = b

    # 3. Hit records: face normal, local coordinates.
    axis = np.full(n, 2, dtype=np.int64)
    sign = np.ones(n)
    point = origin + np.where(np.isfinite(best_t), best_t, 0.0)[:, None] * dirs
    local = point.copy()
    on_box = np.nonzero(best_obj >= 0)[0]
    if len(on_box):
        ob = best_obj[on_box]
        b_lo, b_hi = lo[ob], hi[ob]
        d = dirs[on_box]
        # The entry face is the slab whose entry distance is largest.
        with np.errstate(invalid="ignore", divide="ignore"):
            t_enter = np.minimum((b_lo - origin) / d, (b_hi - origin) / d)
        t_enter = np.nan_to_num(t_enter, nan=-np.inf)
        ax = np.argmax(t_enter, axis=1)
        axis[on_box] = ax
        sign[on_box] = -np.sign(d[np.arange(len(ax)), ax])
        local[on_box] = point[on_box] - b_lo
    s = local[np.arange(n), _S_AXIS[axis]]
    q = local[np.arange(n), _Q_AXIS[axis]]
    return Hits(t=best_t, obj=best_obj, axis=axis, sign=sign, point=point, local=local,
                s=s, q=q)


_BOX_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7],
                       [0, 4], [1, 5], [2, 6], [3, 7]])


def box_windows(lo: np.ndarray, hi: np.ndarray, T_odom_camera: np.ndarray,
                intrinsics: Intrinsics, near: float = 0.05, margin: int = 2) -> np.ndarray:
    """Image window each box can cover: [B,4] int (row0, row1, col0, col1), empty if none.

    The box is clipped to the near plane (edges crossing it contribute their crossing
    points), its visible corners are projected, and the bounding rectangle is grown by
    ``margin`` pixels.
    """
    b = len(lo)
    if b == 0:
        return np.zeros((0, 4), dtype=np.int64)
    bits = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)])
    corners = np.where(bits[None, :, :] == 1, hi[:, None, :], lo[:, None, :])  # [B,8,3]
    R, o = T_odom_camera[:3, :3], T_odom_camera[:3, 3]
    cam = (corners - o) @ R  # [B,8,3] in the optical frame
    p0, p1 = cam[:, _BOX_EDGES[:, 0]], cam[:, _BOX_EDGES[:, 1]]  # [B,12,3]
    z0, z1 = p0[..., 2], p1[..., 2]
    crosses = (z0 - near) * (z1 - near) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(crosses, (near - z0) / (z1 - z0), 0.0)
    cut = p0 + a[..., None] * (p1 - p0)
    pts = np.concatenate([cam, cut], axis=1)  # [B,20,3]
    valid = np.concatenate([cam[..., 2] >= near, crosses], axis=1)
    z = np.maximum(pts[..., 2], near)
    u = intrinsics.fx * pts[..., 0] / z + intrinsics.cx
    v = intrinsics.fy * pts[..., 1] / z + intrinsics.cy
    big = 1e9
    u_min = np.where(valid, u, big).min(axis=1)
    u_max = np.where(valid, u, -big).max(axis=1)
    v_min = np.where(valid, v, big).min(axis=1)
    v_max = np.where(valid, v, -big).max(axis=1)
    out = np.zeros((b, 4), dtype=np.int64)
    any_valid = valid.any(axis=1)
    out[:, 0] = np.clip(np.floor(v_min) - margin, 0, intrinsics.height)
    out[:, 1] = np.clip(np.ceil(v_max) + margin + 1, 0, intrinsics.height)
    out[:, 2] = np.clip(np.floor(u_min) - margin, 0, intrinsics.width)
    out[:, 3] = np.clip(np.ceil(u_max) + margin + 1, 0, intrinsics.width)
    out[~any_valid] = 0
    return out


def lidar_windows(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, yaw: float,
                  elevations: np.ndarray, azimuth_step: float,
                  n_azimuths: int) -> tuple[np.ndarray, np.ndarray]:
    """Conservative (beam, azimuth) windows of a spinning LiDAR that can hit each box.

    lo, hi: [B,3] boxes in odom; origin: [3] sensor in odom; yaw: sensor heading
    (level sensor); elevations: [R] sorted beam elevations (rad); azimuths are
    ``k * azimuth_step`` (rad), k < n_azimuths, counter-clockwise from the sensor x axis.
    A box seen across azimuth 0 gets two windows. Returns ([W] box index, [W,4]
    windows (row0, row1, col0, col1)).
    """
    b = len(lo)
    rel_lo, rel_hi = lo - origin, hi - origin
    # Elevation bounds from the nearest and farthest horizontal distances.
    dx = np.maximum(np.maximum(rel_lo[:, 0], -rel_hi[:, 0]), 0.0)
    dy = np.maximum(np.maximum(rel_lo[:, 1], -rel_hi[:, 1]), 0.0)
    r_min = np.hypot(dx, dy)
    r_max = np.hypot(np.maximum(np.abs(rel_lo[:, 0]), np.abs(rel_hi[:, 0])),
                     np.maximum(np.abs(rel_lo[:, 1]), np.abs(rel_hi[:, 1])))
    z_top, z_bot = rel_hi[:, 2], rel_lo[:, 2]
    el_max = np.arctan2(z_top, np.where(z_top > 0, r_min, r_max))
    el_min = np.arctan2(z_bot, np.where(z_bot < 0, r_min, r_max))
    eps = 1e-9
    row0 = np.searchsorted(elevations, el_min - eps, side="left")
    row1 = np.searchsorted(elevations, el_max + eps, side="right")
    # Azimuth range: spanned by the footprint corners (origin outside the footprint).
    cx = np.stack([rel_lo[:, 0], rel_hi[:, 0], rel_lo[:, 0], rel_hi[:, 0]], axis=1)
    cy = np.stack([rel_lo[:, 1], rel_lo[:, 1], rel_hi[:, 1], rel_hi[:, 1]], axis=1)
    az = np.mod(np.arctan2(cy, cx) - yaw, 2.0 * np.pi)  # [B,4] in [0, 2 pi)
    a_min, a_max = az.min(axis=1), az.max(axis=1)
    wraps = a_max - a_min > np.pi  # seen across azimuth 0: [a_max_low.., 2pi) + [0, ..]
    low = np.where(az < np.pi, az, -np.inf).max(axis=1)   # last corner before 2 pi wrap
    high = np.where(az >= np.pi, az, np.inf).min(axis=1)  # first corner after it
    inside = r_min <= 0.0  # sensor above the footprint: every azimuth
    windows, owner = [], []
    for lo_az, hi_az, use in ((a_min, a_max, ~wraps & ~inside),
                              (np.zeros(b), low, wraps & ~inside),
                              (high, np.full(b, 2.0 * np.pi), wraps & ~inside),
                              (np.zeros(b), np.full(b, 2.0 * np.pi), inside)):
        idx = np.nonzero(use)[0]
        c0 = np.clip(np.floor(lo_az[idx] / azimuth_step) - 1, 0, n_azimuths)
        c1 = np.clip(np.ceil(hi_az[idx] / azimuth_step) + 2, 0, n_azimuths)
        windows.append(np.stack([row0[idx], row1[idx], c0, c1], axis=1))
        owner.append(idx)
    return np.concatenate(owner), np.concatenate(windows).astype(np.int64)


def texture_footprint(hits: Hits, dirs: np.ndarray, d_u: np.ndarray,
                      d_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extent of one pixel along the face's s and q axes (metres), for planar faces.

    For a plane n.P = c hit at P = o + t d: dP/du = t (d_u - d (n.d_u)/(n.d)), with
    d_u = dd/du the change of the ray direction per pixel. dirs: [N,3]; d_u, d_v: [3].
    """
    n = hits.normal
    nd = np.einsum("ij,ij->i", n, dirs)
    nd = np.where(np.abs(nd) < 1e-9, 1e-9, nd)
    t = np.where(np.isfinite(hits.t), hits.t, 0.0)
    dpdu = t[:, None] * (d_u[None, :] - dirs * ((n @ d_u) / nd)[:, None])
    dpdv = t[:, None] * (d_v[None, :] - dirs * ((n @ d_v) / nd)[:, None])
    idx = np.arange(len(t))
    sa, qa = _S_AXIS[hits.axis], _Q_AXIS[hits.axis]
    fp_s = np.abs(dpdu[idx, sa]) + np.abs(dpdv[idx, sa])
    fp_q = np.abs(dpdu[idx, qa]) + np.abs(dpdv[idx, qa])
    return fp_s, fp_q


# --------------------------------------------------------------------------------------
# Materials
# --------------------------------------------------------------------------------------

@dataclass
class Surface:
    """Per-ray material: albedo [N,3] linear, emission at night [N,3] (lit windows,
    lamps, headlights of oncoming cars), wetness [N] (how much the surface darkens and
    mirrors the sky in rain), snow_cover [N] (fraction under snow)."""

    albedo: np.ndarray
    night_emission: np.ndarray
    wetness: np.ndarray
    snow_cover: np.ndarray


def surface_materials(scene: Scene, hits: Hits, fp_s: np.ndarray,
                      fp_q: np.ndarray) -> Surface:
    """Evaluate the procedural textures at the hit points (sky rows stay zero)."""
    n = len(hits.t)
    albedo = np.zeros((n, 3))
    emission = np.zeros((n, 3))
    wetness = np.zeros(n)
    snow = np.zeros(n)
    seed = scene.seed
    fp = np.maximum(fp_s, fp_q)

    # Ground: asphalt, markings, parking strip, sidewalk tiles.
    g = np.nonzero(hits.obj == GROUND)[0]
    if len(g):
        x, y = hits.local[g, 0], hits.local[g, 1]
        fx, fy, f = fp_s[g], fp_q[g], fp[g]
        ay = np.abs(y)
        noise = fractal_noise(x, y, f, (6.0, 1.5, 0.4, 0.12, 0.05),
                              (0.25, 0.20, 0.30, 0.40, 0.40), seed * 31 + 1)
        # Tyre-polished streaks along the driving direction: fine across, long along x.
        noise += fractal_noise(x, y, fx, (0.15, 0.05, 0.02), (0.25, 0.30, 0.30),
                               seed * 31 + 4, aspect=8.0, footprint_q=fy)
        grey = 0.09 * np.clip(1.0 + noise, 0.2, None)  # albedo stays positive
        colour = grey[:, None] * np.array([1.0, 1.0, 1.04])[None, :]
        # Parking strip: slightly lighter asphalt, bay lines every 6 m.
        strip = (ay >= CARRIAGEWAY_HALF) & (ay < PARKING_OUTER)
        colour[strip] *= 1.25
        # Sidewalk: concrete tiles with dark joints.
        walk = ay >= PARKING_OUTER
        if np.any(walk):
            wn = fractal_noise(x[walk], y[walk], f[walk], (2.0, 0.5, 0.15, 0.05),
                               (0.15, 0.25, 0.30, 0.30), seed * 31 + 2)
            joints = np.maximum(periodic_coverage(x[walk], 1.2, 0.0, 0.03, fx[walk]),
                                periodic_coverage(y[walk], 1.2, 0.0, 0.03, fy[walk]))
            tile = 0.30 * (1.0 + wn) * (1.0 - 0.6 * joints)
            colour[walk] = tile[:, None] * np.array([1.0, 0.98, 0.94])[None, :]
        # Markings (white paint): dashed centre line, solid lane edges, bay separators.
        paint = band_coverage(y, -0.075, 0.075, fy) * periodic_coverage(x, 9.0, 0.0, 3.0, fx)
        paint = np.maximum(paint, band_coverage(ay, CARRIAGEWAY_HALF - 0.15,
                                                CARRIAGEWAY_HALF, fy))
        bay = strip * periodic_coverage(x, 6.0, 0.0, 0.1, fx)
        paint = np.clip(np.maximum(paint, bay), 0.0, 1.0)
        colour = colour * (1.0 - paint[:, None]) + 0.65 * paint[:, None]
        albedo[g] = colour
        wetness[g] = np.where(walk, 0.5, 1.0)
        # Snow covers the ground except the two wheel tracks of each lane.
        tracks = np.zeros(len(g))
        for lane_centre in (-LANE_WIDTH / 2, LANE_WIDTH / 2):
            for offset in (-0.8, 0.8):
                tracks = np.maximum(tracks, band_coverage(y, lane_centre + offset - 0.3,
                                                          lane_centre + offset + 0.3, fy))
        drift = value_noise(x, y, 3.0, seed * 31 + 3)
        snow[g] = np.clip((1.0 - 0.85 * tracks) * (0.75 + 0.5 * drift), 0.0, 1.0)

    boxes = np.nonzero(hits.obj >= 0)[0]
    if len(boxes) == 0:
        return Surface(albedo, emission, wetness, snow)
    kind = scene.kind[hits.obj[boxes]]

    # Buildings: plaster or brick facades with a window grid.
    i = boxes[kind == BUILDING]
    if len(i):
        ob = hits.obj[i]
        s, q = hits.s[i], hits.q[i]
        fs, fq, f = fp_s[i], fp_q[i], fp[i]
        floor_h, period, brick, tex_seed = (scene.params[ob, k] for k in range(4))
        tex_seed = tex_seed.astype(np.int64)
        base = scene.colour[ob]
        noise = fractal_noise(s, q, f, (2.0, 0.6, 0.2, 0.07), (0.25, 0.25, 0.30, 0.30),
                              tex_seed)
        # Weathering streaks: long horizontally, fine vertically.
        noise += fractal_noise(s, q, fs, (0.12, 0.04), (0.25, 0.25), tex_seed + 5,
                               aspect=6.0, footprint_q=fq)
        shade = np.clip(1.0 + noise, 0.2, None)
        # Bricks: 0.25 m x 0.6 m, offset every other row, light mortar joints.
        row = np.floor(q / 0.25)
        s_brick = s + 0.3 * (row % 2)
        per_brick = cell_hash(np.floor(s_brick / 0.6), row, tex_seed) - 0.5
        brick_w = detail_weight(0.25, f) * brick
        mortar = np.maximum(periodic_coverage(q, 0.25, 0.0, 0.025, fq),
                            periodic_coverage(s_brick, 0.6, 0.0, 0.025, fs)) * brick
        shade = shade * (1.0 + 0.45 * brick_w * per_brick)
        colour = base * shade[:, None]
        colour = colour * (1.0 - mortar[:, None]) + 0.55 * mortar[:, None]
        # Windows: one per `period` along s and per floor along q (not at the very top).
        height = (scene.hi[ob, 2] - scene.lo[ob, 2])
        win = periodic_coverage(s, period, 0.3 * period, 0.75 * period, fs) \
            * periodic_coverage(q, floor_h, 0.30 * floor_h, 0.80 * floor_h, fq) \
            * (q < height - 0.5) * (hits.axis[i] != 2)
        cell_s = np.floor(s / period)
        cell_q = np.floor(q / floor_h)
        glass_var = cell_hash(cell_s, cell_q, tex_seed + 17)
        glass = np.stack([0.05 + 0.10 * glass_var, 0.06 + 0.10 * glass_var,
                          0.08 + 0.10 * glass_var], axis=1)
        albedo[i] = colour * (1.0 - win[:, None]) + glass * win[:, None]
        lit = (cell_hash(cell_s, cell_q, tex_seed + 29) < 0.3) * win
        emission[i] = lit[:, None] * np.array([1.0, 0.75, 0.40])[None, :] \
            * (0.15 + 0.2 * glass_var)[:, None]
        wetness[i] = 0.15 * win
        snow[i] = (hits.axis[i] == 2) * 1.0

    # Cars (parked and moving): body colour, glass band, dark bumper band.
    for k in (CAR, MOVING_CAR):
        i = boxes[kind == k]
        if not len(i):
            continue
        ob = hits.obj[i]
        s, q = hits.s[i], hits.q[i]
        fq, f = fp_q[i], fp[i]
        z = hits.local[i, 2]
        height = scene.hi[ob, 2] - scene.lo[ob, 2]
        tex_seed = scene.params[ob, 3].astype(np.int64)
        noise = fractal_noise(s, q, f, (0.8, 0.25, 0.08), (0.20, 0.20, 0.20), tex_seed)
        colour = scene.colour[ob] * (1.0 + noise)[:, None]
        side = hits.axis[i] != 2
        glass = band_coverage(z, height - 0.6, height - 0.12, fq) * side
        bumper = band_coverage(z, -1.0, 0.35, fq) * side
        colour = colour * (1.0 - glass[:, None]) + 0.04 * glass[:, None]
        colour = colour * (1.0 - bumper[:, None]) + 0.03 * bumper[:, None]
        albedo[i] = colour
        wetness[i] = 0.2
        snow[i] = (hits.axis[i] == 2) * 0.9
        if k == MOVING_CAR:
            # Headlights on the front face (the -x face: these cars drive towards -x).
            width = scene.hi[ob, 1] - scene.lo[ob, 1]
            front = (hits.axis[i] == 0) & (hits.sign[i] < 0)
            y = hits.local[i, 1]
            lamp = (band_coverage(y, 0.15, 0.45, fp_s[i])
                    + band_coverage(y, width - 0.45, width - 0.15, fp_s[i])) \
                * band_coverage(z, 0.45, 0.65, fq) * front
            emission[i] = lamp[:, None] * np.array([3.0, 3.0, 2.7])[None, :]
            albedo[i] = albedo[i] * (1.0 - lamp[:, None]) + 0.8 * lamp[:, None]

    # Poles: galvanised metal.
    i = boxes[kind == POLE]
    if len(i):
        noise = fractal_noise(hits.s[i], hits.q[i], fp[i], (1.0, 0.2), (0.15, 0.1),
                              scene.params[hits.obj[i], 3].astype(np.int64))
        albedo[i] = scene.colour[hits.obj[i]] * (1.0 + noise)[:, None]
        wetness[i] = 0.2
    # Lamp heads: light grey housing, glowing underside at night.
    i = boxes[kind == LAMP]
    if len(i):
        albedo[i] = scene.colour[hits.obj[i]]
        under = (hits.axis[i] == 2) & (hits.sign[i] < 0)
        emission[i] = under[:, None] * np.array([6.0, 5.0, 3.2])[None, :]
    return Surface(albedo, emission, wetness, snow)


# --------------------------------------------------------------------------------------
# The street: camera and LiDAR views of the scene along the trajectory
# --------------------------------------------------------------------------------------

@dataclass
class CameraGeometry:
    """What the camera sees at one frame, shared by every condition.

    depth: [H,W] float32 z-depth at the pixel centres (NaN sky); objects: [H,W] int64
    what each pixel centre sees (box index into the scene arrays, GROUND or SKY).
    Appearance samples (S of them): pixel-centre samples of the pixels away from
    silhouettes, then ``supersample**2`` sub-pixel samples of each silhouette pixel.
    hits / surface / dirs ([S,3] odom ray directions, z-depth units) describe them;
    ``centre_pixels`` [S0] and ``edge_pixels`` [E] are flat pixel indices
    (S = S0 + E * supersample**2). T_odom_camera, T_odom_base: [4,4].
    """

    frame: int
    time: float
    depth: np.ndarray
    objects: np.ndarray
    hits: Hits
    surface: Surface
    dirs: np.ndarray
    T_odom_camera: np.ndarray
    T_odom_base: np.ndarray
    centre_pixels: np.ndarray
    edge_pixels: np.ndarray
    samples_per_edge_pixel: int = 1

    @cached_property
    def normals(self) -> np.ndarray:
        """[S,3] unit surface normals (zero for sky)."""
        return self.hits.normal

    @cached_property
    def distance(self) -> np.ndarray:
        """[S] metres from the camera centre to the hit (inf for sky)."""
        return np.where(self.hits.obj == SKY, np.inf,
                        self.hits.t * np.linalg.norm(self.dirs, axis=1))

    def assemble(self, radiance: np.ndarray, height: int, width: int) -> np.ndarray:
        """[S,3] per-sample values -> [H,W,3] pixels (sub-samples averaged)."""
        img = np.zeros((height * width, radiance.shape[1]), dtype=radiance.dtype)
        n0 = len(self.centre_pixels)
        img[self.centre_pixels] = radiance[:n0]
        if len(self.edge_pixels):
            img[self.edge_pixels] = radiance[n0:].reshape(
                len(self.edge_pixels), self.samples_per_edge_pixel, -1).mean(axis=1)
        return img.reshape(height, width, -1)


@dataclass
class SyntheticStreet:
    """One deterministic street drive: scene + trajectory + sensors.

    ``frames`` sets how long the generated street is (it covers the drive plus
    margins); the scene for a seed does not depend on it (segments have their own RNG).
    """

    config: SynthConfig = field(default_factory=SynthConfig)
    frames: int = 30

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        self.trajectory = Trajectory(self.config)
        duration = (self.frames + 1) / self.config.frame_rate
        x_end = self.config.speed * duration + self.config.ground_extent
        self.scene = Scene.generate(self.config.seed, -120.0, x_end,
                                    self.config.moving_car_probability)
        self._cache: CameraGeometry | None = None

    # -- frames and clocks ------------------------------------------------------------
    @property
    def intrinsics(self) -> Intrinsics:
        return self.config.intrinsics

    def frame_time(self, frame: int) -> float:
        """Seconds since the first camera frame."""
        return frame / self.config.frame_rate

    def lidar_time(self, frame: int) -> float:
        return frame / self.config.frame_rate + self.config.lidar_time_offset

    def stamp_ns(self, seconds: float) -> int:
        return int(self.config.start_time_ns + round(seconds * 1e9))

    # -- static transforms ------------------------------------------------------------
    @cached_property
    def T_base_camera(self) -> np.ndarray:
        """[4,4] camera_optical_frame -> base_link."""
        return make_transform(R_BASE_OPTICAL, self.config.camera_xyz)

    @cached_property
    def T_base_lidar(self) -> np.ndarray:
        """[4,4] lidar -> base_link (lidar axes parallel to base_link)."""
        return make_transform(np.eye(3), self.config.lidar_xyz)

    def T_odom_camera(self, t: float) -> np.ndarray:
        return self.trajectory.T_odom_base(t) @ self.T_base_camera

    def T_src_tgt(self, src_frame: int, tgt_frame: int) -> np.ndarray:
        """[4,4] maps points in the target camera frame to the source camera frame."""
        T_src = self.T_odom_camera(self.frame_time(src_frame))
        T_tgt = self.T_odom_camera(self.frame_time(tgt_frame))
        return np.linalg.inv(T_src) @ T_tgt

    # -- camera -----------------------------------------------------------------------
    def _candidate_boxes(self, t: float, x_min: float, x_max: float, y_abs: float = np.inf):
        lo, hi = self.scene.boxes_at(t)
        keep = (hi[:, 0] >= x_min) & (lo[:, 0] <= x_max) \
            & (np.minimum(np.abs(lo[:, 1]), np.abs(hi[:, 1])) <= y_abs)
        idx = np.nonzero(keep)[0]
        return idx, lo[idx], hi[idx]

    def _cast(self, t: float, T: np.ndarray, rows: np.ndarray, cols: np.ndarray,
              du: np.ndarray | float = 0.0, dv: np.ndarray | float = 0.0):
        """Ray-cast camera rays through pixels (rows, cols) + sub-pixel offsets (du, dv).

        rows must be sorted. Returns (hits, [N,3] odom directions with unit optical z).
        """
        K = self.intrinsics
        R, origin = T[:3, :3], T[:3, 3]
        # Rays with unit z in the optical frame: t along the ray = z-depth.
        d_cam = np.stack([(cols + du - K.cx) / K.fx, (rows + dv - K.cy) / K.fy,
                          np.ones(len(rows))], axis=1)
        dirs = d_cam @ R.T
        # Boxes ahead of the camera, each tested only against rays in its image window.
        x0 = origin[0]
        idx, lo, hi = self._candidate_boxes(t, x0 - 15.0, x0 + self.config.ground_extent)
        windows = box_windows(lo, hi, T, K) if self.cull else None
        hits = raycast(origin, dirs, lo, hi, self._ground_x, pixels=(rows, cols),
                       windows=windows)
        hits.obj = np.where(hits.obj >= 0, idx[np.maximum(hits.obj, 0)], hits.obj)
        return hits, dirs

    def geometry(self, frame: int) -> CameraGeometry:
        """Ray-cast the camera at ``frame`` (cached for the last frame).

        Depth is cast through the pixel centres. Texture patterns are box-filtered
        analytically, so one appearance sample per pixel suffices except on silhouettes
        (where the surface changes between neighbouring pixels): those pixels get a
        ``supersample x supersample`` sub-pixel grid, averaged when shading, so object
        edges are anti-aliased and resample consistently between frames.
        """
        if self._cache is not None and self._cache.frame == frame:
            return self._cache
        if frame < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        t = self.frame_time(frame)
        K = self.intrinsics
        H, W = K.height, K.width
        T_odom_base = self.trajectory.T_odom_base(t)
        T = T_odom_base @ self.T_base_camera
        # 1. Pixel centres: ground-truth z-depth.
        rows, cols = np.divmod(np.arange(H * W), W)
        hits, dirs = self._cast(t, T, rows, cols)
        depth = np.where(hits.obj == SKY, np.nan, hits.t).reshape(H, W)
        objects = hits.obj.reshape(H, W).copy()
        # 2. Silhouette pixels: a 4-neighbour sees another surface (object or face).
        key = (hits.obj * 8 + hits.axis * 2 + (hits.sign > 0)).reshape(H, W)
        edge = np.zeros((H, W), dtype=bool)
        dx = key[:, 1:] != key[:, :-1]
        dy = key[1:, :] != key[:-1, :]
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        ss = self.config.supersample
        if ss == 1:
            edge[:] = False
        edge_pixels = np.flatnonzero(edge)
        centre_pixels = np.flatnonzero(~edge)
        # 3. Sub-pixel samples of the silhouette pixels (pixel-centre convention:
        #    offsets (i + 0.5) / ss - 0.5).
        if len(edge_pixels):
            offsets = (np.arange(ss) + 0.5) / ss - 0.5
            ov, ou = (o.ravel() for o in np.meshgrid(offsets, offsets, indexing="ij"))
            n_sub = ss * ss
            e_rows = np.repeat(rows[edge_pixels], n_sub)
            e_cols = np.repeat(cols[edge_pixels], n_sub)
            sub_hits, sub_dirs = self._cast(t, T, e_rows, e_cols, np.tile(ou, len(edge_pixels)),
                                            np.tile(ov, len(edge_pixels)))
            hits = _concat(_subset(hits, centre_pixels), sub_hits)
            dirs = np.concatenate([dirs[centre_pixels], sub_dirs])
        else:
            n_sub = 1
        # 4. Footprints (of one output pixel) and materials.
        R = T[:3, :3]
        fp_s, fp_q = texture_footprint(hits, dirs, R[:, 0] / K.fx, R[:, 1] / K.fy)
        surface = surface_materials(self.scene, hits, fp_s, fp_q)
        geom = CameraGeometry(frame=frame, time=t, depth=depth.astype(np.float32),
                              objects=objects, hits=hits, surface=surface, dirs=dirs,
                              T_odom_camera=T, T_odom_base=T_odom_base,
                              centre_pixels=centre_pixels, edge_pixels=edge_pixels,
                              samples_per_edge_pixel=n_sub)
        logger.debug("frame %d: %d pixels, %d on silhouettes (%d samples each)", frame,
                     H * W, len(edge_pixels), n_sub)
        self._cache = geom
        return geom

    @property
    def _ground_x(self) -> tuple[float, float]:
        return self.scene.x_range

    def render(self, frame: int, condition: str = "day-clear") -> tuple[np.ndarray, np.ndarray]:
        """Camera image and ground truth at ``frame``.

        Returns (rgb [H,W,3] uint8, depth [H,W] float32 metres, NaN for sky).
        """
        geom = self.geometry(frame)
        return shade(self, geom, condition), geom.depth.copy()

    # -- LiDAR ------------------------------------------------------------------------
    #: test each box only against the rays of its image / angular window (same result,
    #: faster); False ray-casts every candidate box against every ray (for checks)
    cull = True

    @cached_property
    def _lidar_elevations(self) -> np.ndarray:
        c = self.config
        return np.deg2rad(np.linspace(c.lidar_elevation[0], c.lidar_elevation[1],
                                      c.lidar_beams))

    @cached_property
    def lidar_directions(self) -> np.ndarray:
        """[beams*azimuths, 3] unit ray directions in the lidar frame (beam-major)."""
        c = self.config
        el = self._lidar_elevations
        az = np.deg2rad(np.arange(0.0, 360.0, c.lidar_azimuth_step))
        ee, aa = np.meshgrid(el, az, indexing="ij")
        return np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa), np.sin(ee)],
                        axis=-1).reshape(-1, 3)

    def lidar_scan(self, frame: int) -> np.ndarray:
        """One sweep at the LiDAR stamp of ``frame``, computed for the pose at that stamp.

        Returns [N,4] float32 (x, y, z, intensity 0-255) in the ``lidar`` frame: only
        returns within [lidar_min_range, lidar_max_range].
        """
        t = self.lidar_time(frame)
        T = self.trajectory.T_odom_base(t) @ self.T_base_lidar
        R, origin = T[:3, :3], T[:3, 3]
        c = self.config
        d_lidar = self.lidar_directions
        dirs = d_lidar @ R.T
        reach = c.lidar_max_range
        idx, lo, hi = self._candidate_boxes(t, origin[0] - reach, origin[0] + reach,
                                            y_abs=reach)
        # Rays form a (beam, azimuth) grid: test each box only in its angular window.
        n_az = len(d_lidar) // c.lidar_beams
        owner, windows = lidar_windows(lo, hi, origin, self.trajectory.yaw(t),
                                       self._lidar_elevations, np.deg2rad(c.lidar_azimuth_step),
                                       n_az)
        rows, cols = np.divmod(np.arange(len(d_lidar)), n_az)
        hits = raycast(origin, dirs, lo[owner], hi[owner], self._ground_x, t_max=reach,
                       pixels=(rows, cols), windows=windows if self.cull else None)
        hits.obj = np.where(hits.obj >= 0, idx[owner[np.maximum(hits.obj, 0)]], hits.obj)
        ok = (hits.obj != SKY) & (hits.t >= self.config.lidar_min_range) & (hits.t <= reach)
        sub = _subset(hits, ok)
        footprint = np.full(len(sub.t), 0.05)
        surface = surface_materials(self.scene, sub, footprint, footprint)
        reflectivity = surface.albedo @ np.array([0.2126, 0.7152, 0.0722])
        points = d_lidar[ok] * sub.t[:, None]
        intensity = np.clip(reflectivity / 0.8, 0.0, 1.0) * 255.0
        return np.concatenate([points, intensity[:, None]], axis=1).astype(np.float32)


_HIT_FIELDS = ("t", "obj", "axis", "sign", "point", "local", "s", "q")


def _subset(hits: Hits, index: np.ndarray) -> Hits:
    return Hits(**{name: getattr(hits, name)[index] for name in _HIT_FIELDS})


def _concat(a: Hits, b: Hits) -> Hits:
    return Hits(**{name: np.concatenate([getattr(a, name), getattr(b, name)])
                   for name in _HIT_FIELDS})


# --------------------------------------------------------------------------------------
# Shading per condition
# --------------------------------------------------------------------------------------

_SUN = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def _condition_rng(street: SyntheticStreet, frame: int, condition: str):
    return np.random.default_rng([street.config.seed & 0xFFFFFFFF, frame,
                                  CONDITIONS.index(condition)])


def _sky(dirs: np.ndarray, top: np.ndarray, horizon: np.ndarray) -> np.ndarray:
    """Sky radiance by ray elevation: [N,3]."""
    elevation = dirs[:, 2] / np.linalg.norm(dirs, axis=1)
    w = np.clip(elevation * 3.0, 0.0, 1.0)[:, None]
    return horizon[None, :] * (1.0 - w) + top[None, :] * w


def _point_light(points, normals, light, direction=None, cos_inner=1.0, cos_outer=-1.0):
    """Irradiance factor from a point light: cos(incidence)/d^2 times a cone profile."""
    to_light = light[None, :] - points
    dist2 = np.maximum(np.einsum("ij,ij->i", to_light, to_light), 0.25)
    to_light_n = to_light / np.sqrt(dist2)[:, None]
    lambert = np.clip(np.einsum("ij,ij->i", normals, to_light_n), 0.0, None)
    if direction is not None:
        cos_angle = -to_light_n @ direction
        lambert = lambert * _smoothstep(cos_outer, cos_inner, cos_angle)
    return lambert / dist2


def shade(street: SyntheticStreet, geom: CameraGeometry, condition: str) -> np.ndarray:
    """Shade precomputed camera geometry for one condition -> [H,W,3] uint8 RGB."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
    rng = _condition_rng(street, geom.frame, condition)
    shader = {"day-clear": _shade_day, "night": _shade_night, "rain": _shade_rain,
              "snow": _shade_snow}[condition]
    img = shader(street, geom, rng)  # [H,W,3] linear radiance
    # Display transform: linear -> sRGB-like gamma, 8 bit.
    img = np.clip(img, 0.0, 1.0) ** (1.0 / 2.2)
    return np.round(img * 255.0).astype(np.uint8)


def _lambert(geom: CameraGeometry, ambient, sun, albedo=None) -> np.ndarray:
    """[S,3] albedo * (ambient + sun * max(n.l, 0))."""
    albedo = geom.surface.albedo if albedo is None else albedo
    cos_sun = np.clip(geom.normals @ _SUN, 0.0, None)
    return albedo * (np.asarray(ambient)[None, :] + np.asarray(sun)[None, :] * cos_sun[:, None])


def _fog(geom: CameraGeometry, radiance: np.ndarray, airlight, visibility: float):
    """Blend towards the airlight colour with distance: exp(-d / visibility)."""
    d = np.where(np.isfinite(geom.distance), geom.distance, 1e6)
    transmission = np.exp(-d / visibility)[:, None]
    return radiance * transmission + np.asarray(airlight)[None, :] * (1.0 - transmission)


def _shade_day(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    """Lambertian under sky ambient + sun; no noise (photometrically consistent)."""
    K = street.intrinsics
    sky = geom.hits.obj == SKY
    out = _lambert(geom, (0.33, 0.36, 0.42), (1.0, 0.95, 0.85))
    out[sky] = _sky(geom.dirs[sky], np.array([0.18, 0.32, 0.65]), np.array([0.62, 0.70, 0.80]))
    return geom.assemble(out, K.height, K.width)


def _shade_night(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    import cv2

    K = street.intrinsics
    hits, surf = geom.hits, geom.surface
    sky = hits.obj == SKY
    solid_idx = np.nonzero(~sky)[0]
    points, normals = hits.point[solid_idx], geom.normals[solid_idx]
    # 1. Dim moonlight.
    irradiance = np.repeat(np.array([[0.002, 0.0025, 0.004]]), len(hits.t), axis=0)
    lit = np.zeros((len(solid_idx), 3))
    # 2. Headlights: two cones forward from the vehicle front.
    T_base = geom.T_odom_base
    forward = T_base[:3, :3] @ np.array([1.0, 0.0, -0.04])
    forward /= np.linalg.norm(forward)
    head = np.array([0.95, 0.95, 0.90]) * 14.0
    for y_off in (-0.75, 0.75):
        pos = T_base[:3, :3] @ np.array([3.7, y_off, 0.65]) + T_base[:3, 3]
        e = _point_light(points, normals, pos, forward,
                         cos_inner=math.cos(math.radians(12.0)),
                         cos_outer=math.cos(math.radians(30.0)))
        lit += e[:, None] * head[None, :]
    # 3. Street lights: sodium-like pools under each lamp head (a lamp 6.7 m up with
    #    a 70 deg cone lights a pool of radius < 20 m).
    lamp_colour = np.array([1.0, 0.78, 0.45]) * 40.0
    down = np.array([0.0, 0.0, -1.0])
    cam_x = geom.T_odom_camera[0, 3]
    lamps = street.scene.lamps
    ahead = np.nonzero((lamps[:, 0] > cam_x - 25.0) & (lamps[:, 0] < cam_x + 150.0))[0]
    for j in ahead:
        pool = np.nonzero(np.abs(points[:, 0] - lamps[j, 0]) < 20.0)[0]
        e = _point_light(points[pool], normals[pool], lamps[j], down,
                         cos_inner=math.cos(math.radians(35.0)),
                         cos_outer=math.cos(math.radians(70.0)))
        lit[pool] += e[:, None] * lamp_colour[None, :]
    irradiance[solid_idx] += lit
    # 4. Emitters (lit windows, lamp heads, oncoming headlights) and a dark sky.
    out = surf.albedo * irradiance + surf.night_emission
    out[sky] = _sky(geom.dirs[sky], np.array([0.0015, 0.0018, 0.0035]),
                    np.array([0.010, 0.008, 0.006]))
    img = geom.assemble(out, K.height, K.width)
    # 5. Sensor: glow around bright lights, high gain -> shot + read noise.
    glow = cv2.GaussianBlur(np.clip(img - 0.8, 0.0, None).astype(np.float32), (0, 0), 3.0)
    img = (img + 0.5 * glow) * 1.5
    noise_sigma = np.sqrt(0.0004 * np.clip(img, 0.0, None) + 0.004 ** 2)
    return img + noise_sigma * rng.standard_normal(img.shape)


def _shade_rain(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    import cv2

    K = street.intrinsics
    hits, surf = geom.hits, geom.surface
    sky = hits.obj == SKY
    sky_top, sky_horizon = np.array([0.35, 0.37, 0.40]), np.array([0.50, 0.52, 0.55])
    # 1. Overcast light; wet surfaces are darker.
    wet_albedo = surf.albedo * (1.0 - 0.45 * surf.wetness)[:, None]
    out = _lambert(geom, (0.55, 0.57, 0.60), (0.15, 0.15, 0.15), wet_albedo)
    # 2. Puddles and wet asphalt mirror the overcast sky (Schlick Fresnel).
    ground = np.nonzero(hits.obj == GROUND)[0]
    d = geom.dirs[ground]
    cos_i = np.abs(d[:, 2]) / np.linalg.norm(d, axis=1)  # ground normal is +z
    fresnel = 0.04 + 0.96 * (1.0 - cos_i) ** 5
    puddle = _smoothstep(0.55, 0.7, value_noise(hits.point[ground, 0], hits.point[ground, 1],
                                                2.5, street.scene.seed * 31 + 9))
    reflect = (surf.wetness[ground] * (0.3 + 0.7 * puddle) * fresnel)[:, None]
    out[ground] = out[ground] * (1.0 - reflect) + reflect * sky_horizon[None, :]
    out[sky] = _sky(geom.dirs[sky], sky_top, sky_horizon)
    # 3. Fog: contrast falls with distance.
    out = _fog(geom, out, sky_horizon, visibility=70.0)
    img = geom.assemble(out, K.height, K.width)
    # 4. Streaks: sparse drops smeared along the fall direction; lens blur, flare, noise.
    img = img + 0.35 * _streaks(rng, K.height, K.width, density=1.0 / 120.0,
                                length=max(5, K.height // 12), angle_deg=75.0)[..., None]
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8).astype(np.float64)
    img = 0.85 * img + 0.15 * img.mean()
    return img + 0.006 * rng.standard_normal(img.shape)


def _shade_snow(street: SyntheticStreet, geom: CameraGeometry, rng) -> np.ndarray:
    K = street.intrinsics
    sky = geom.hits.obj == SKY
    horizon = np.array([0.70, 0.72, 0.75])
    # 1. Snow cover on the ground (not in the wheel tracks) and on tops; overcast light.
    snow = geom.surface.snow_cover[:, None]
    snowy = geom.surface.albedo * (1.0 - snow) + 0.85 * snow
    out = _lambert(geom, (0.60, 0.62, 0.66), (0.2, 0.2, 0.2), snowy)
    out[sky] = _sky(geom.dirs[sky], np.array([0.55, 0.57, 0.60]), horizon)
    # 2. Haze and falling flakes.
    out = _fog(geom, out, horizon, visibility=90.0)
    img = geom.assemble(out, K.height, K.width)
    img = img + 0.6 * _streaks(rng, K.height, K.width, density=1.0 / 300.0, length=3,
                               angle_deg=80.0)[..., None]
    return img + 0.006 * rng.standard_normal(img.shape)


def _streaks(rng, height: int, width: int, density: float, length: int,
             angle_deg: float) -> np.ndarray:
    """[H,W] float: random drops convolved with a slanted line kernel (motion streaks)."""
    import cv2

    drops = np.zeros((height, width), dtype=np.float32)
    count = int(height * width * density)
    rows = rng.integers(0, height, count)
    cols = rng.integers(0, width, count)
    drops[rows, cols] = rng.uniform(0.4, 1.0, count).astype(np.float32)
    size = 2 * length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    angle = math.radians(angle_deg)
    for k in range(-length, length + 1):  # kernel of <= 2*length+1 taps, not per pixel
        r = int(round(length + k * math.sin(angle)))
        c = int(round(length + k * math.cos(angle)))
        kernel[r, c] = 1.0
    kernel /= kernel.sum() / 3.0
    return cv2.filter2D(drops, -1, kernel, borderType=cv2.BORDER_CONSTANT)
