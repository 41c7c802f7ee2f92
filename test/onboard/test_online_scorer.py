"""The online scorer's TAE (no ROS): known motion and known depths, worked by hand."""
from __future__ import annotations

import numpy as np
import pytest

from depth_perception.camera import Intrinsics
from depth_perception.data.tf import TfBuffer, make_transform
from depth_perception.evaluation.online import OnlineScorer
from depth_perception.evaluation.report import EvaluationResults

K = Intrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5, width=64, height=48)
SECOND = 10**9


def _scorer(frames_with_pose: int) -> OnlineScorer:
    """A dense-reference scorer whose camera ('cam', in 'odom') moves 1 m forward along
    its optical axis per second, with poses known for the first frames only."""
    tf = TfBuffer()
    for k in range(frames_with_pose):
        tf.add_dynamic("odom", "cam", (k + 1) * SECOND, make_transform((0.0, 0.0, float(k))))
    scorer = OnlineScorer(EvaluationResults(0.1, 80.0, False, None), "stream", "day-clear",
                          use_lidar=False, tolerance_ns=1000, tf=tf, temporal=True)
    scorer.add_intrinsics("cam", K)
    return scorer


def _feed(scorer, k: int, predicted: float) -> None:
    """Frame k: a wall 10 - k m ahead (reference), the stream predicting ``predicted``."""
    stamp = (k + 1) * SECOND
    scorer.add_reference(stamp, np.full((K.height, K.width), 10.0 - k, np.float32))
    scorer.add_depth(stamp, "cam", np.full((K.height, K.width), predicted, np.float32))
    scorer.moved(stamp)


def test_a_stream_that_moves_with_the_camera_has_no_tae_one_that_stays_has_its_motion():
    exact, stuck = _scorer(2), _scorer(2)
    for k in range(2):
        _feed(exact, k, 10.0 - k)               # the wall as it comes nearer
        _feed(stuck, k, 10.0)                   # the same 10 m in both frames
    for scorer in (exact, stuck):
        scorer.flush()
        assert scorer.frames_scored == 2
    tae_exact, = [r.values for r in exact.results.models["stream"].temporal]
    tae_stuck, = [r.values for r in stuck.results.models["stream"].temporal]
    assert tae_exact["tae"] == pytest.approx(0.0, abs=1e-6) and tae_exact["pixels"] > 0
    # frame 1's 10 m warped into frame 2 is 9 m against its 10 m: 1/10; back: 11 m against
    # frame 1's 10 m: 1/10
    assert tae_stuck["tae_forward"] == pytest.approx(0.1, abs=1e-6)
    assert tae_stuck["tae_backward"] == pytest.approx(0.1, abs=1e-6)


def test_a_frame_without_a_camera_pose_is_scored_and_left_out_of_the_tae():
    scorer = _scorer(2)                         # no pose at the third frame's stamp
    for k in range(3):
        _feed(scorer, k, 10.0 - k)
    scorer.flush()
    assert scorer.frames_scored == 3 and scorer.frames_without_pose == 1
    assert len(scorer.results.models["stream"].temporal) == 1      # the pair of frames 1-2
