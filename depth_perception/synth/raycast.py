"""Vectorised numpy ray casting against the ground plane and axis-aligned boxes.

Camera rays are culled per box to the box's image window, LiDAR rays to its
(beam, azimuth) window; both give the same hits as testing every ray.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depth_perception.camera import Intrinsics
from depth_perception.synth.layout import GROUND, SKY

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



_HIT_FIELDS = ("t", "obj", "axis", "sign", "point", "local", "s", "q")


def subset_hits(hits: Hits, index: np.ndarray) -> Hits:
    return Hits(**{name: getattr(hits, name)[index] for name in _HIT_FIELDS})


def concat_hits(a: Hits, b: Hits) -> Hits:
    return Hits(**{name: np.concatenate([getattr(a, name), getattr(b, name)])
                   for name in _HIT_FIELDS})

