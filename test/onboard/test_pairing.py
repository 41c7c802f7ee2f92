"""StampPairer: image <-> CameraInfo by exact stamp, bounded wait, fallback said once."""
from __future__ import annotations

import pytest

from depth_perception.runtime.pairing import StampPairer


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_pairs_by_stamp_whichever_comes_first():
    pairer = StampPairer(wait_s=0.1, clock=Clock())
    # CameraInfos for stamps 1 and 2 (different K) before their images, out of order
    assert pairer.add_info("cam", 2, "K2") == []
    assert pairer.add_info("cam", 1, "K1") == []
    [p1] = pairer.add_image("cam", 1, "img1")
    [p2] = pairer.add_image("cam", 2, "img2")
    assert (p1.info, p1.kind) == ("K1", "exact") and (p2.info, p2.kind) == ("K2", "exact")
    # image 3 before its CameraInfo: it waits, then pairs with K3, not with K2
    assert pairer.add_image("cam", 3, "img3") == [] and pairer.waiting == 1
    [p3] = pairer.add_info("cam", 3, "K3")
    assert (p3.image, p3.info, p3.kind) == ("img3", "K3", "exact") and pairer.waiting == 0
    # another frame_id with the same stamp does not mix in
    assert pairer.add_image("other", 3, "img_other") == []


def test_rejected_camera_info_never_pairs():
    pairer = StampPairer(wait_s=0.1, clock=Clock())
    pairer.add_info("cam", 1, "K1")
    pairer.add_info("cam", 2, "zeroK", why_rejected="all-zero K")
    [bad] = pairer.add_image("cam", 2, "img2")
    assert bad.kind == "rejected_info" and bad.info is None and "all-zero K" in bad.why
    pairer.add_info("cam", 3, "K3")
    [good] = pairer.add_image("cam", 3, "img3")
    assert (good.info, good.kind) == ("K3", "exact")
    # a CameraInfo found unusable later (size) is not a fallback either
    pairer.reject_info("cam", 3, "CameraInfo is 32x24 but the image is 64x48")
    clock = pairer._clock
    pairer.add_image("cam", 4, "img4")
    clock.t = 1.0
    [fallback] = pairer.expire()
    assert fallback.info == "K1" and fallback.kind == "fallback"


def test_fallback_after_the_wait_is_said_once_per_frame():
    clock = Clock()
    pairer = StampPairer(wait_s=0.1, clock=clock)
    assert pairer.add_image("cam", 1, "img1") == []
    clock.t = 0.2
    [none] = pairer.expire()
    assert none.kind == "no_info" and not none.ok and "within 100 ms" in none.why
    pairer.add_info("cam", 5, "K5")
    out = []
    for k, stamp in enumerate((6, 7, 8)):
        assert pairer.add_image("cam", stamp, f"img{stamp}") == []
        clock.t += 0.05
        assert pairer.expire() == []                       # still within the wait
        clock.t += 0.06
        out += pairer.expire()
    assert [p.info for p in out] == ["K5"] * 3 and {p.kind for p in out} == {"fallback"}
    assert [p.first_fallback for p in out] == [True, False, False]
    assert pairer.fallbacks == 3
    # a late CameraInfo of a decided image changes nothing
    assert pairer.add_info("cam", 6, "K6") == []
    # wait 0: fall back at once
    now = StampPairer(wait_s=0.0, clock=clock)
    now.add_info("cam", 1, "K1")
    [p] = now.add_image("cam", 2, "img2")
    assert p.kind == "fallback" and p.first_fallback
    with pytest.raises(ValueError, match="wait_s"):
        StampPairer(wait_s=-1)


def test_waiting_images_are_bounded():
    clock = Clock()
    pairer = StampPairer(wait_s=10.0, keep=3, clock=clock)
    pairer.add_info("cam", 0, "K0")
    forced = []
    for stamp in range(1, 6):
        forced += pairer.add_image("cam", stamp, f"img{stamp}")
    assert [p.image for p in forced] == ["img1", "img2"] and pairer.waiting == 3
