"""export without --height/--width: the size the runtime runs the model at."""
from __future__ import annotations

import pytest

from depth_perception.camera import Intrinsics
from depth_perception.metadata import ModelMetadata


class OneCamera:
    """FrameReader stand-in: frame 0 of any bag is this camera."""

    def __init__(self, intrinsics):
        self.intrinsics = intrinsics

    def read(self, bag, indices):
        return [(None, self.intrinsics) for _ in indices]


def test_default_export_size_follows_the_runtime(capsys):
    from depth_perception_training.commands.export import default_export_size

    meta = ModelMetadata(train_width=224, train_height=70, train_focal_px=132.6)
    camera = Intrinsics(185.6, 185.6, 159.5, 47.5, 320, 96)
    assert default_export_size(meta, "bag", OneCamera(camera)) == (238, 70)
    assert "as_trained" in capsys.readouterr().out
    # a 1280x720 camera with a 1000 px lens: short side 720 * 132.6 / 1000 = 95.5 -> 98
    wide = Intrinsics(1000.0, 1000.0, 639.5, 359.5, 1280, 720)
    assert default_export_size(meta, "bag", OneCamera(wide)) == (168, 98)
    assert default_export_size(meta, None, None) == (224, 70)
    with pytest.raises(ValueError, match="records no training size"):
        default_export_size(ModelMetadata(), None, None)
