"""Depth units and invalid-value meanings (depth_perception.units)."""
import numpy as np
import pytest

from depth_perception import units


def test_millimetre_round_trip_and_invalid_values():
    depth = np.array([[0.001, 1.2345, np.nan], [np.inf, 70.0, 0.0]], np.float32)
    mm = units.metres_to_mm(depth)
    assert mm.dtype == np.uint16
    # 70 m does not fit in uint16 millimetres: invalid (0), like NaN, inf and 0
    np.testing.assert_array_equal(mm, [[1, 1234, 0], [0, 0, 0]])
    back = units.mm_to_metres(mm)
    assert back[0, 1] == pytest.approx(1.234)
    assert np.isnan(back[0, 2]) and np.isnan(back[1, 1])


def test_out_of_range_marking():
    d = units.mark_out_of_range(np.array([0.05, 1.0, 100.0, np.nan], np.float32), 0.1, 80.0)
    assert d[0] == -np.inf and d[1] == 1.0 and d[2] == np.inf and np.isnan(d[3])
    # the caller's array is left alone unless it hands it over (copy=False, float32)
    mine = np.array([0.05, 1.0, 100.0], np.float32)
    units.mark_out_of_range(mine, 0.1, 80.0)
    assert mine.tolist() == [np.float32(0.05), 1.0, 100.0]
    same = units.mark_out_of_range(mine, 0.1, 80.0, copy=False)
    assert same is mine and mine.tolist() == [-np.inf, 1.0, np.inf]


@pytest.mark.parametrize("values,expected", [
    ([np.nan, 2.0, 80.0, 0.1], [np.nan, 2.0, 80.0, 0.1]),      # within: the bounds kept
    ([np.nan, 2.0, 80.5], [np.nan, 2.0, np.inf]),               # only too far
    ([np.nan, 0.05, 3.0], [np.nan, -np.inf, 3.0]),              # only too close
    ([np.nan, np.nan], [np.nan, np.nan]),                       # nothing valid
    ([-np.inf, np.inf, 5.0], [-np.inf, np.inf, 5.0]),           # marked already
    ([], []),
])
def test_out_of_range_marking_each_side_alone(values, expected):
    d = units.mark_out_of_range(np.array(values, np.float32).reshape(1, -1), 0.1, 80.0)
    np.testing.assert_array_equal(d.ravel(), np.array(expected, np.float32))
