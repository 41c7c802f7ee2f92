"""The street: camera and LiDAR views of the scene along the trajectory.

Camera appearance: texture patterns are box-filtered over each pixel's footprint, so
one sample per pixel suffices inside surfaces; pixels on silhouettes (a neighbour sees
another surface) are supersampled on a sub-pixel grid. Ground-truth depth is the
z-depth at the pixel centre.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.synth.conditions import shade
from depth_perception.data.tf import invert_transform, make_transform
from depth_perception.synth.layout import (R_BASE_OPTICAL, SKY, Scene, SynthConfig,
                                           Trajectory, pitch_matrix)
from depth_perception.synth.materials import Surface, surface_materials
from depth_perception.synth.raycast import (Hits, box_windows, concat_hits, lidar_windows,
                                            raycast, subset_hits, texture_footprint)

logger = logging.getLogger(__name__)


@dataclass
class CameraGeometry:
    """What the camera sees at one frame, shared by every condition.

    depth: [H,W] float32 z-depth at the pixel centres (+inf sky: REP 117 "no return",
    as units.py says); objects: [H,W] int64
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
                                    self.config.moving_car_probability,
                                    self.config.parked_car_probability,
                                    self.config.intersection_probability,
                                    self.lead_cars(duration))
        self._cache: CameraGeometry | None = None

    def lead_cars(self, duration: float) -> list[tuple[float, float, float]]:
        """[(x_rear at t = 0, y, speed)] of ``config.lead_vehicles`` cars ahead in the ego
        lane: first gaps of 8-45 m, speeds within -1.5..+2.5 m/s of the ego's, kept at
        least 7 m ahead of the camera for the whole drive."""
        c = self.config
        rng = np.random.default_rng([c.seed & 0xFFFFFFFF, 4_000_000])
        cars = []
        for _ in range(c.lead_vehicles):
            gap = rng.uniform(8.0, 45.0)
            speed = c.speed + rng.uniform(-1.5, 2.5)
            if gap + (speed - c.speed) * duration < 7.0:
                speed = c.speed + (7.0 - gap) / duration
            cars.append((c.camera_xyz[0] + gap, c.lane_y + rng.uniform(-0.2, 0.2), speed))
        return cars

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
        return make_transform(self.config.camera_xyz,
                              R_BASE_OPTICAL @ pitch_matrix(self.config.camera_pitch))

    @cached_property
    def T_base_lidar(self) -> np.ndarray:
        """[4,4] lidar -> base_link (lidar axes parallel to base_link)."""
        return make_transform(self.config.lidar_xyz, np.eye(3))

    def T_odom_camera(self, t: float) -> np.ndarray:
        return self.trajectory.T_odom_base(t) @ self.T_base_camera

    def T_src_tgt(self, src_frame: int, tgt_frame: int) -> np.ndarray:
        """[4,4] maps points in the target camera frame to the source camera frame."""
        T_src = self.T_odom_camera(self.frame_time(src_frame))
        T_tgt = self.T_odom_camera(self.frame_time(tgt_frame))
        return invert_transform(T_src) @ T_tgt

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
        depth = np.where(hits.obj == SKY, np.inf, hits.t).reshape(H, W)
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
            hits = concat_hits(subset_hits(hits, centre_pixels), sub_hits)
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

    def moving(self, frame: int) -> np.ndarray:
        """[H,W] bool: pixel centres that see a moving object at ``frame`` (a box with a
        velocity: oncoming and lead cars), the synthetic ground truth of which pixels
        do not follow the ego-motion."""
        objects = self.geometry(frame).objects
        hit = objects >= 0
        out = np.zeros(objects.shape, dtype=bool)
        out[hit] = self.scene.velocity[objects[hit]] != 0.0
        return out

    def render(self, frame: int, condition: str = "day-clear") -> tuple[np.ndarray, np.ndarray]:
        """Camera image and ground truth at ``frame``.

        Returns (rgb [H,W,3] uint8, depth [H,W] float32 metres, +inf for sky).
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
        sub = subset_hits(hits, ok)
        footprint = np.full(len(sub.t), 0.05)
        surface = surface_materials(self.scene, sub, footprint, footprint)
        reflectivity = surface.albedo @ np.array([0.2126, 0.7152, 0.0722])
        points = d_lidar[ok] * sub.t[:, None]
        intensity = np.clip(reflectivity / 0.8, 0.0, 1.0) * 255.0
        return np.concatenate([points, intensity[:, None]], axis=1).astype(np.float32)


