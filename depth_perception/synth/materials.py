"""Procedural materials: world-space textures evaluated at ray hits.

Appearance is a function of the surface point in the object's own coordinates
(asphalt noise, lane markings, bricks, windows, per-object colours), so a surface
looks the same from every viewpoint. Texture patterns are box-filtered over the pixel
footprint (analytic anti-aliasing), so detail fades instead of aliasing in the distance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from depth_perception.synth.layout import (BUILDING, CAR, CARRIAGEWAY_HALF, GROUND, LAMP,
                                           LANE_WIDTH, MOVING_CAR, PARKING_OUTER, POLE)

if TYPE_CHECKING:
    from depth_perception.synth.layout import Scene
    from depth_perception.synth.raycast import Hits

def smoothstep(e0, e1, x):
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
    fx = smoothstep(0.0, 1.0, x - ix)
    fy = smoothstep(0.0, 1.0, y - iy)
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
        # Flanks (faces along the car, s = x from the rear): window pillars, door seams
        # and wheels, the vertical detail of a real car's side.
        flank = hits.axis[i] == 1
        fs = fp_s[i]
        length = scene.hi[ob, 0] - scene.lo[ob, 0]
        glass = glass * (1.0 - flank * (1.0 - band_coverage(s, 0.55, length - 0.45, fs)
                                         + band_coverage(s, 0.5 * length - 0.06,
                                                         0.5 * length + 0.06, fs)))
        seam = (band_coverage(s, 0.32 * length - 0.02, 0.32 * length + 0.02, fs)
                + band_coverage(s, 0.68 * length - 0.02, 0.68 * length + 0.02, fs)) \
            * band_coverage(z, 0.35, height - 0.6, fq) * flank
        colour = colour * (1.0 - glass[:, None]) + 0.04 * glass[:, None]
        colour = colour * (1.0 - bumper[:, None]) + 0.03 * bumper[:, None]
        colour = colour * (1.0 - 0.7 * seam[:, None])
        for centre in (0.8, length - 0.8):
            r = np.hypot(s - centre, z - 0.13)  # axle 0.33 m above the road
            tyre = np.clip((0.33 - r) / np.maximum(f, 1e-6) + 0.5, 0.0, 1.0) * flank
            rim = np.clip((0.2 - r) / np.maximum(f, 1e-6) + 0.5, 0.0, 1.0) * flank
            colour = colour * (1.0 - tyre[:, None]) + 0.02 * tyre[:, None]
            colour = colour * (1.0 - rim[:, None]) + 0.35 * rim[:, None]
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


