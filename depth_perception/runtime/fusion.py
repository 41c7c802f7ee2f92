"""Temporal fusion of a depth stream with the camera's ego-motion (numpy + OpenCV, no ROS).

Single-frame monocular depth jumps from one frame to the next (an obstacle 20 m ahead
moves by a metre). With the camera motion between two frames known (TF / odometry),
the previous fused depth can be carried into the current camera and averaged with the
new prediction where the two agree:

1. every current pixel is back-projected with the new depth ``d`` and moved into the
   previous camera (``T_prev_cur``), where the previous fused depth is sampled
   (bilinear; any invalid neighbour makes the sample invalid) along with its age;
2. the sampled surface point is moved back into the current camera: its z there is
   ``w = (z_f / z_p) (d - t_z) + t_z`` (``z_p``: the pixel's depth in the previous
   camera, ``z_f``: the previous fused depth there, ``t_z``: the z of the translation of
   ``T_cur_prev``), so ``w = d`` for a static scene whose depth is right;
3. where ``|d - w| / d`` is under ``threshold`` the pixel agrees: its age grows by one
   (up to ``max_age``) and the fused depth is the running mean ``w + (d - w) / age``
   (beyond ``max_age`` frames an exponential average with weight ``1 / max_age``);
4. elsewhere the pixel is reset to the new prediction, age 1: moving objects,
   disocclusions, the image border, pixels whose previous depth was unusable, so
   nothing lags behind a moving car;
5. no motion given (no TF), another camera geometry, or the first frame: the whole
   frame is reset and the output is the new prediction unchanged.

The temporal agreement gives each pixel a confidence in [0, 1]:
``(age - 1) / (max_age - 1) * (1 - |d - w| / (d * threshold))`` where it agrees (a pixel
that has agreed with its history for ``max_age`` frames and does so again exactly is
1), 0 where it was reset or has no depth.

The depth's REP 117 meanings are kept: +inf, -inf and NaN pixels of the new prediction
are published as they are, are never fused, and restart their history.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from depth_perception.camera import Intrinsics, pixel_rays

__all__ = ["FusionResult", "TemporalFusion"]


@dataclass
class FusionResult:
    """``depth`` [H,W] float32 fused metres (REP 117 values of the new prediction kept);
    :attr:`confidence` [H,W] float32 temporal agreement in [0, 1] (computed when first
    asked for: the node publishes it only while subscribed); :attr:`age` [H,W] float32
    frames the pixel has agreed in a row (1: reset this frame, 0: no depth); ``reset``:
    the whole frame was reset (``why``: no motion, first frame, new camera); ``fused``:
    share of the usable pixels that were blended. After :meth:`resampled`, ``depth`` is
    on another grid and the confidence and age are brought to it when asked for."""

    depth: np.ndarray
    _agreement: object
    _age: np.ndarray
    reset: bool
    why: str = ""
    fused: float = 0.0
    _resample: object = field(default=None, repr=False)    # fusion grid -> depth's grid
    _confidence: np.ndarray | None = field(default=None, repr=False)

    @property
    def confidence(self) -> np.ndarray:
        if self._confidence is None:
            if self._agreement is None:               # reset: no history agrees yet
                grid = np.zeros(self._age.shape, np.float32)
            else:
                grid = self._agreement.compute()
            self._confidence = grid if self._resample is None else self._resample(grid)
        return self._confidence

    @property
    def age(self) -> np.ndarray:
        return self._age if self._resample is None else self._resample(self._age)

    def resampled(self, depth: np.ndarray, resample) -> "FusionResult":
        """This frame's fusion with ``depth`` on another grid (the camera's, for a fusion
        run on the model's grid); ``resample`` maps a fusion-grid image to it."""
        return replace(self, depth=depth, _resample=resample, _confidence=None)


class TemporalFusion:
    """One camera's fused depth across frames (see the module docstring).

    ``threshold``: the largest relative difference between the new prediction and the
    carried depth that still counts as agreement; ``max_age``: frames in the running
    mean (then the weight of a new frame stays ``1 / max_age``).
    """

    def __init__(self, threshold: float = 0.1, max_age: int = 8):
        if not 0 < threshold < 1:
            raise ValueError(f"temporal fusion: threshold must be in (0, 1) (relative "
                             f"depth difference), got {threshold}")
        if int(max_age) < 2:
            raise ValueError(f"temporal fusion: max_age must be >= 2 frames, got {max_age}")
        self.threshold = float(threshold)
        self.max_age = int(max_age)
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next frame is output as it comes."""
        self._depth: np.ndarray | None = None          # [H,W] float32 fused, NaN unusable
        self._age: np.ndarray | None = None            # [H,W] float32 frames agreed
        self._key: tuple | None = None                 # camera geometry of the state

    @staticmethod
    def _camera_key(k: Intrinsics) -> tuple:
        return (k.width, k.height, k.fx, k.fy, k.cx, k.cy)

    def update(self, depth: np.ndarray, intrinsics: Intrinsics,
               T_cur_prev: np.ndarray | None) -> FusionResult:
        """Fuse the new prediction ``depth`` [H,W] metres (REP 117) of the camera
        ``intrinsics``; ``T_cur_prev`` [4,4] maps points of the previous frame's camera
        into this frame's (None: motion unknown, the frame is reset)."""
        depth = np.ascontiguousarray(depth, dtype=np.float32)
        if depth.shape != (intrinsics.height, intrinsics.width):
            raise ValueError(f"temporal fusion: depth of shape {depth.shape} does not match "
                             f"the camera {intrinsics.width}x{intrinsics.height}")
        key = self._camera_key(intrinsics)
        why = ("first frame" if self._depth is None else
               "no camera motion" if T_cur_prev is None else
               "camera geometry changed" if key != self._key else "")
        if why:
            with np.errstate(invalid="ignore"):
                return self._reset(depth, np.isfinite(depth) & (depth > 0), key, why)
        T = np.asarray(T_cur_prev, dtype=np.float64)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise ValueError(f"temporal fusion: T_cur_prev must be a finite [4,4] transform, "
                             f"got shape {T.shape}")
        # Band by band: the dozen temporaries of a band of rows stay in a core's cache,
        # where the same passes over whole images go to memory (every pixel's result
        # depends only on its own values and its sample of the previous state, so the
        # bands give the whole image's numbers).
        P = np.asarray(intrinsics.K, np.float64) @ np.linalg.inv(T)[:3]  # [3,4] K [R|t]
        rx, ry = _rays(intrinsics)
        fused = depth.copy()
        state = np.empty_like(depth)                    # next self._depth
        new_age = np.empty_like(depth)
        agree = np.empty(depth.shape, bool)
        rel = np.empty_like(depth)
        counts = np.zeros(2, np.int64)                  # usable, agreed
        band = max(1, _BAND_PIXELS // depth.shape[1])                     # rows
        for r0 in range(0, depth.shape[0], band):
            rows = slice(r0, r0 + band)
            self._update_rows(depth[rows], rx[rows], ry[rows], P, np.float32(T[2, 3]),
                              fused[rows], state[rows], new_age[rows], agree[rows],
                              rel[rows], counts)
        self._depth, self._age = state, new_age
        n, blended = (int(c) for c in counts)
        return FusionResult(fused, _Agreement(agree, new_age, rel, self), new_age, False, "",
                            blended / n if n else 0.0)

    def _update_rows(self, depth, rx, ry, P, tz, fused, state, new_age, agree, rel,
                     counts) -> None:
        """Steps 1-4 of the module docstring for one band of rows: writes the band's
        fused depth (``fused`` holds the new prediction), next state, age, agreement and
        relative difference, and adds its usable and blended pixels to ``counts``."""
        # 1. the current pixels in the previous camera, sampled there (in-place passes)
        z = cv2.threshold(depth, 1e30, 0.0, cv2.THRESH_TOZERO_INV)[1]      # +inf -> 0
        cv2.patchNaNs(z, 0.0)                                              # NaN -> 0
        cv2.threshold(z, 0.0, 0.0, cv2.THRESH_TOZERO, dst=z)               # <= 0 -> 0
        usable = z > 0
        # a pixel's ray (x/z, y/z, 1) at depth z: P (z ray, 1) = z (P[:, :3] ray) + P[:, 3]
        zp = _project(rx, ry, z, P[2])                    # its depth in the previous camera
        front = zp > 1e-3                       # ahead of the previous camera (others
                                                # are reset below, whatever their sample)
        map_x = cv2.divide(_project(rx, ry, z, P[0]), zp)               # pixel there
        map_y = cv2.divide(_project(rx, ry, z, P[1]), zp)
        zf = cv2.remap(self._depth, map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
        age = cv2.remap(self._age, map_x, map_y, cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        # 2. the previous fused surface seen from the current camera:
        #    carried = zf / zp * (z - tz) + tz
        with np.errstate(divide="ignore", invalid="ignore"):
            carried = np.divide(zf, zp, out=zf)
            carried *= np.subtract(z, tz, out=map_x)
            carried += tz
            cv2.absdiff(z, carried, dst=rel)
            rel /= z                            # inf or NaN where there is no depth (z = 0)
            # 3. agreement: running mean; 4. elsewhere: reset (age 1, or 0 without depth)
            np.less(rel, self.threshold, out=agree)                     # NaN compares False
        agree &= age >= 1.0
        agree &= front
        # OpenCV's passes where numpy's are several times slower: the masked copies (a
        # bool array is a 0/1 uint8 mask), the age's clip, the usable mask as 1.0 / 0.0
        agreed = agree.view(np.uint8)
        cv2.threshold(z, 0.0, 1.0, cv2.THRESH_BINARY, dst=new_age)         # 1, 0: no depth
        cv2.threshold(age, self.max_age - 1, 0.0, cv2.THRESH_TRUNC, dst=age)
        age += 1
        cv2.copyTo(age, agreed, new_age)
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = np.subtract(z, carried, out=map_y)                    # z - carried
            diff /= new_age
            diff += carried                                 # carried + (z - carried) / age
        cv2.copyTo(diff, agreed, fused)
        state.fill(np.nan)
        cv2.copyTo(fused, usable.view(np.uint8), state)
        counts += (np.count_nonzero(usable), np.count_nonzero(agree))

    def _reset(self, depth, usable, key, why) -> FusionResult:
        age = usable.astype(np.float32)
        self._depth = np.where(usable, depth, np.float32(np.nan))
        self._age, self._key = age, key
        return FusionResult(depth.copy(), None, age, True, why, 0.0)

    def confidence(self, agree: np.ndarray, age: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """[H,W] float32 temporal agreement (module docstring) of one frame."""
        with np.errstate(invalid="ignore"):
            return np.where(agree, (age - 1) / (self.max_age - 1) * (1 - rel / self.threshold),
                            np.float32(0.0)).astype(np.float32)


class _Agreement:
    """What the confidence of a frame is computed from, when it is asked for."""

    def __init__(self, agree, age, rel, fusion):
        self.args, self.fusion = (agree, age, rel), fusion

    def compute(self) -> np.ndarray:
        return self.fusion.confidence(*self.args)


#: pixels fused at a time: a band's temporaries (about a dozen float32 images of
#: 64 rows of a 686-pixel DINOv2 grid) stay within a core's L2 cache
_BAND_PIXELS = 64 * 686


def _rays(intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """([H,W] x/z, [H,W] y/z) float32 of every pixel, cached per camera geometry."""
    key = TemporalFusion._camera_key(intrinsics)
    rays = _RAYS.get(key)
    if rays is None:
        r = pixel_rays(intrinsics)
        rays = (np.ascontiguousarray(r.x_per_z, np.float32),
                np.ascontiguousarray(r.y_per_z, np.float32))
        _RAYS.clear()
        _RAYS[key] = rays
    return rays


def _project(rx: np.ndarray, ry: np.ndarray, z: np.ndarray, row: np.ndarray) -> np.ndarray:
    """[H,W] ``row . (z rx, z ry, z, 1)`` for one row of a [3,4] projection: the ray's
    coefficient in one pass (``addWeighted``), then times z plus the row's translation."""
    out = cv2.addWeighted(rx, float(row[0]), ry, float(row[1]), float(row[2]))
    out *= z
    out += np.float32(row[3])
    return out


_RAYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
