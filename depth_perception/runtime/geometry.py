"""Camera geometry as trained: which input size a model runs at, and the depth factor.

A metric depth network ties its scale to the focal length in pixels it was trained
with: the same scene seen with twice the focal length looks twice as close. This
module decides, per camera geometry, how a frame is fed to a model:

* ``as_trained`` (default): dynamic-size models run with the input focal length equal
  to the training one (short side = camera short side x f_train / f_camera, a multiple
  of ``size_multiple``); when the metadata has the training size but no focal length,
  the training short side; models that record neither (transformers models) keep
  :data:`DEFAULT_SHORT_SIDE`. The predicted depth is used as is.
* ``canonical`` (Metric3D's canonical camera): run at the same default size (or any
  explicit one) and rescale the predicted metric depth by f_input / f_train, where
  f_input is the focal length at model resolution. Needs the training focal length.

An explicit short side always overrides the size. Pure numpy-free Python: the
estimator, the node, ``evaluate`` and the export parity check all call
:func:`plan_input`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata

FOCAL_POLICIES = ("as_trained", "canonical")
#: Short side of dynamic models that record no training geometry (Depth Anything's 518).
DEFAULT_SHORT_SIDE = 518


def focal_px(intrinsics: Intrinsics) -> float:
    """One focal length in pixels: the mean of fx and fy."""
    return 0.5 * (float(intrinsics.fx) + float(intrinsics.fy))


@dataclass(frozen=True)
class InputPlan:
    """How frames of one camera geometry are fed to the model.

    ``short_side``: for the preprocessor of dynamic models (None for fixed-size
    models); ``focal_policy``; ``canonical``: depth is multiplied by
    f_input / ``train_focal`` after inference; ``reason``: one line saying what was
    chosen and why (logged, in diagnostics and the status message).
    """

    short_side: int | None
    focal_policy: str
    canonical: bool
    train_focal: float
    reason: str

    def depth_factor(self, model_intrinsics: Intrinsics) -> float:
        """Factor on the predicted depth for a frame whose K at model resolution is
        ``model_intrinsics``: f_input / f_train (canonical), else 1."""
        if not self.canonical:
            return 1.0
        return focal_px(model_intrinsics) / self.train_focal


def check_focal_policy(policy: str, metadata: ModelMetadata) -> None:
    """ValueError unless ``policy`` is known and usable with ``metadata``."""
    if policy not in FOCAL_POLICIES:
        raise ValueError(f"focal_policy must be one of {list(FOCAL_POLICIES)}, got {policy!r}")
    if policy == "canonical" and not metadata.train_focal_px > 0:
        raise ValueError("focal_policy 'canonical' needs the training focal length in the "
                         "model metadata (train_focal_px); this model does not record it "
                         "(use 'as_trained', or re-export it from a checkpoint that has it)")
    if policy == "canonical" and not metadata.is_metric:
        raise ValueError(f"focal_policy 'canonical' rescales metric depth, but the model "
                         f"outputs {metadata.output_kind}")


def _round_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def plan_input(metadata: ModelMetadata, intrinsics: Intrinsics,
               short_side: int | None = None, focal_policy: str = "as_trained") -> InputPlan:
    """The :class:`InputPlan` for frames with ``intrinsics`` (camera resolution).

    ``short_side``: explicit short side of dynamic models (None: decide from the
    metadata, see the module docstring).
    """
    check_focal_policy(focal_policy, metadata)
    canonical = focal_policy == "canonical"
    f_train = float(metadata.train_focal_px)
    f_cam = focal_px(intrinsics)
    cam_short = min(intrinsics.width, intrinsics.height)
    fixed = metadata.fixed_size
    if fixed is not None:
        mh, mw = fixed
        f_in = f_cam * math.sqrt((mw / intrinsics.width) * (mh / intrinsics.height))
        why = f"fixed model input {mw}x{mh}"
        short = None
    elif short_side is not None:
        short = int(short_side)
        f_in = f_cam * _round_multiple(short, metadata.size_multiple) / cam_short
        why = f"explicit short side {short}"
    elif f_train > 0 and not canonical:
        short = _round_multiple(cam_short * f_train / f_cam, metadata.size_multiple)
        f_in = f_cam * short / cam_short
        return InputPlan(short, focal_policy, False, f_train,
                         f"as_trained: short side {short} puts the camera's focal length "
                         f"{f_cam:.1f} px at {f_in:.1f} px (trained at {f_train:.1f} px)")
    elif metadata.train_height > 0:
        short = min(metadata.train_height, metadata.train_width)
        f_in = f_cam * _round_multiple(short, metadata.size_multiple) / cam_short
        why = f"training short side {short}"
    else:
        short = DEFAULT_SHORT_SIDE
        f_in = f_cam * _round_multiple(short, metadata.size_multiple) / cam_short
        why = (f"short side {short} (the model records no training geometry; "
               "transformers default)")
    if canonical:
        return InputPlan(short, focal_policy, True, f_train,
                         f"canonical: {why}, depth x f_input/f_train = {f_in:.1f}/"
                         f"{f_train:.1f} = {f_in / f_train:.3f}")
    note = ""
    if f_train > 0 and abs(f_in / f_train - 1.0) > 0.05:
        note = (f"; input focal {f_in:.1f} px differs from the training {f_train:.1f} px "
                f"by {100 * (f_in / f_train - 1):+.0f}%: metric depth scales with it "
                "(focal_policy canonical corrects it)")
    return InputPlan(short, focal_policy, False, f_train, f"as_trained: {why}{note}")


def warmup_intrinsics(metadata: ModelMetadata | None, width: int, height: int) -> Intrinsics:
    """Intrinsics of a blank ``width`` x ``height`` warm-up frame whose focal length gives
    the model's trained input geometry (so a warm-up runs the size real frames will)."""
    f = float(max(width, height))
    if metadata is not None and metadata.train_focal_px > 0:
        f = metadata.train_focal_px * min(width, height) / min(metadata.train_height,
                                                                metadata.train_width)
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)
