"""Street layout: the drive's configuration, the vehicle trajectory and the scene boxes.

Geometry (``odom`` frame, REP 103: x forward along the street, y left, z up):

* the road plane z = 0 (two 3.5 m lanes around y = 0, parking strips, sidewalks),
* axis-aligned boxes: buildings on both sides with varied setbacks and gaps, parked
  cars, a few oncoming (moving) cars, lamp posts with lamp heads,
* sky where nothing is hit (+inf depth: REP 117 "no return", see street.py).

The vehicle (``base_link`` on the road under the rear axle) drives along +x at about
``speed`` m/s in the right lane, weaving gently: y = lane_y + a sin(2 pi x / L),
heading along the path (yaw = atan(dy/dx), a couple of degrees). The camera is 1.5 m
above the road looking forward, the LiDAR 1.8 m up, both on ``base_link``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.data.tf import make_transform

# Object kinds of the boxes.
BUILDING, CAR, MOVING_CAR, POLE, LAMP = 0, 1, 2, 3, 4
GROUND, SKY = -1, -2

# Street layout across y (metres, symmetric): lanes, parking strip, sidewalk.
LANE_WIDTH = 3.5
CARRIAGEWAY_HALF = LANE_WIDTH  # |y| < 3.5: two lanes, one each side of y = 0
PARKING_OUTER = 5.7  # parking strip 3.5 < |y| < 5.7
SIDEWALK_OUTER = 8.7  # sidewalk 5.7 < |y| < 8.7; buildings start at or behind it
SEGMENT_LENGTH = 24.0  # scene generated in segments along x, one RNG per segment
#: widest weave of a varied drive (m): the ego body (1.8 m wide) centred on its lane
#: (3.5 m) stays 0.1 m inside it, so it never reaches the parked cars (their sides are
#: 1.75-2.15 m from the lane centre) or the oncoming lane.
EGO_HALF_WIDTH = 0.9
MAX_SWAY = LANE_WIDTH / 2 - EGO_HALF_WIDTH - 0.1

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
    moving_car_probability: float = 0.25  # oncoming car per 24 m segment
    parked_car_probability: float = 0.55  # per 6 m parking bay
    #: per 24 m segment: a cross street (no buildings, parked cars or lamps on either
    #: side over 12-16 m; a distant building down the cross street on each side)
    intersection_probability: float = 0.0
    lead_vehicles: int = 0  # cars ahead in the ego lane, same direction, 8-45 m away
    camera_pitch: float = 0.0  # degrees, positive tilts the camera down
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
        for name in ("moving_car_probability", "parked_car_probability",
                     "intersection_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.lead_vehicles < 0 or abs(self.camera_pitch) > 30.0:
            raise ValueError(f"lead_vehicles must be >= 0 and |camera_pitch| <= 30 deg, got "
                             f"{self.lead_vehicles} and {self.camera_pitch}")

    @classmethod
    def varied(cls, seed: int, **fields) -> "SynthConfig":
        """A drive whose rig and street differ from seed to seed: camera height 1.2-2.0 m
        and pitch -2..+5 deg, speed 7-13 m/s, weaving of 0.2-0.75 m in the lane, 0-2
        lead cars at varied distances, 0.2-0.6 oncoming cars and 0.1-0.35 cross streets
        per segment, 30-90 % of the parking bays taken. ``fields`` override the draw."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
        height = rng.uniform(1.2, 2.0)
        drawn = dict(
            seed=int(seed), camera_xyz=(1.5, 0.0, height), lidar_xyz=(0.8, 0.0, height + 0.3),
            camera_pitch=rng.uniform(-2.0, 5.0), speed=rng.uniform(7.0, 13.0),
            sway_amplitude=rng.uniform(0.2, MAX_SWAY), sway_wavelength=rng.uniform(40.0, 90.0),
            moving_car_probability=rng.uniform(0.2, 0.6),
            parked_car_probability=rng.uniform(0.3, 0.9),
            intersection_probability=rng.uniform(0.1, 0.35),
            lead_vehicles=int(rng.integers(0, 3)))
        return cls(**{**drawn, **fields})

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


def pitch_matrix(pitch_down_deg: float) -> np.ndarray:
    """[3,3] rotation of an optical frame (x right, y down, z forward) tilted down by
    ``pitch_down_deg``: its z axis turns towards +y (down). Columns = new axes."""
    a = math.radians(pitch_down_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])



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
        return make_transform(self.position(t), yaw_matrix(self.yaw(t)))

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
                 moving_car_probability: float = 0.25, parked_car_probability: float = 0.55,
                 intersection_probability: float = 0.0, lead_cars=()) -> "Scene":
        """Street from x_start to x_end. Segment i of 24 m draws from RNG (seed, i);
        cross streets from their own RNG (seed, i + 2e6), so a probability of 0 leaves
        the street as it was. lead_cars: [(x_rear at t = 0, y centre, speed m/s)] of
        cars driving along +x."""
        boxes: list[tuple] = []  # (lo, hi, velocity, kind, colour, params)
        lamps: list[tuple] = []
        first = int(math.floor(x_start / SEGMENT_LENGTH))
        last = int(math.ceil(x_end / SEGMENT_LENGTH))
        for segment in range(first, last):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, segment + 1_000_000])
            x0 = segment * SEGMENT_LENGTH
            start = len(boxes), len(lamps)
            for side in (1.0, -1.0):
                cls._buildings(rng, boxes, x0, side)
                cls._parked_cars(rng, boxes, x0, side, parked_car_probability)
                cls._lamp_post(rng, boxes, lamps, x0, side)
            if intersection_probability > 0:
                irng = np.random.default_rng([int(seed) & 0xFFFFFFFF, segment + 2_000_000])
                if irng.random() < intersection_probability:
                    cls._cross_street(irng, boxes, lamps, start, x0)
            if rng.random() < moving_car_probability:
                length, width, height = rng.uniform(4.0, 4.8), 1.8, rng.uniform(1.4, 1.6)
                xc = x0 + rng.uniform(0.0, SEGMENT_LENGTH)
                yc = LANE_WIDTH / 2 + rng.uniform(-0.2, 0.2)
                boxes.append(((xc - length / 2, yc - width / 2, 0.2),
                              (xc + length / 2, yc + width / 2, 0.2 + height),
                              -rng.uniform(7.0, 11.0), MOVING_CAR,
                              _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))],
                              (0.0, 0.0, 0.0, rng.integers(1 << 30))))
        lrng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 3_000_000])
        for x_rear, yc, speed in lead_cars:
            length, width, height = lrng.uniform(3.9, 4.8), 1.8, lrng.uniform(1.4, 1.7)
            boxes.append(((x_rear, yc - width / 2, 0.2), (x_rear + length, yc + width / 2,
                                                          0.2 + height),
                          float(speed), CAR, _CAR_COLOURS[lrng.integers(len(_CAR_COLOURS))],
                          (0.0, 0.0, 0.0, lrng.integers(1 << 30))))
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
    def _cross_street(rng, boxes, lamps, start, x0):
        """Clear a 12-16 m cross street out of the segment's roadside boxes (those added
        since ``start`` = (box count, lamp count)); put a distant building down it on
        each side."""
        width = rng.uniform(12.0, 16.0)
        xa = x0 + rng.uniform(2.0, SEGMENT_LENGTH - 2.0 - width)
        xb = xa + width
        b0, l0 = start
        keep = [b for b in boxes[b0:] if b[1][0] <= xa or b[0][0] >= xb]
        del boxes[b0:]
        boxes.extend(keep)
        lamps[l0:] = [lp for lp in lamps[l0:] if not xa - 0.5 < lp[0] < xb + 0.5]
        for side in (1.0, -1.0):
            near = rng.uniform(35.0, 70.0)
            y_lo, y_hi = (near, near + 12.0) if side > 0 else (-near - 12.0, -near)
            colour = _BUILDING_COLOURS[rng.integers(len(_BUILDING_COLOURS))]
            boxes.append(((xa - 4.0, y_lo, 0.0), (xb + 4.0, y_hi, rng.uniform(8.0, 25.0)), 0.0,
                          BUILDING, colour, (rng.uniform(3.0, 3.6), rng.uniform(2.4, 3.8), 0.0,
                                             rng.integers(1 << 30))))

    @staticmethod
    def _parked_cars(rng, boxes, x0, side, probability: float = 0.55):
        for slot in range(4):
            if rng.random() > 1.0 - probability:
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


