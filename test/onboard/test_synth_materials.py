"""Procedural materials of the synthetic street, checked at hand-placed hit points."""
from __future__ import annotations

import numpy as np

from depth_perception.synth.layout import CAR, Scene
from depth_perception.synth.materials import surface_materials
from depth_perception.synth.raycast import Hits

LENGTH, HEIGHT = 4.4, 1.5
BODY = np.array([0.75, 0.60, 0.10])


def car_scene() -> Scene:
    """One parked yellow car, 4.4 m long, its box 0.2 m above the road."""
    return Scene(lo=np.array([[0.0, 2.0, 0.2]]), hi=np.array([[LENGTH, 3.8, 0.2 + HEIGHT]]),
                 velocity=np.zeros(1), kind=np.array([CAR]), colour=BODY[None],
                 params=np.array([[0.0, 0.0, 0.0, 12345.0]]), lamps=np.zeros((0, 3)), seed=0)


def albedo_at(points, axis: int) -> np.ndarray:
    """Albedo at (s, q) points of the car's face with normal ``axis``, seen sharply
    (1 mm pixel footprint). On a flank s = x from the rear and q = z from the box bottom."""
    s, q = np.asarray(points, dtype=float).T
    n = len(s)
    local = np.zeros((n, 3))
    local[:, 0 if axis == 1 else 1] = s
    local[:, 2] = q
    hits = Hits(t=np.full(n, 3.0), obj=np.zeros(n, dtype=np.int64),
                axis=np.full(n, axis), sign=-np.ones(n, dtype=np.int64),
                point=local + [0.0, 2.0, 0.2], local=local, s=s, q=q)
    fp = np.full(n, 1e-3)
    return surface_materials(car_scene(), hits, fp, fp).albedo


def test_car_flanks_have_wheels_pillars_and_seams():
    """The vertical detail of a car's side, where a real car has it: a grey rim at the
    axle (0.33 m above the road = 0.13 m above the box), a dark tyre around it, the
    B-pillar splitting the window band, dark door seams at 32 % and 68 % of the length."""
    glass_z = HEIGHT - 0.35
    a = albedo_at([(0.8, 0.13), (LENGTH - 0.8, 0.13),       # rims (front and rear axle)
                   (0.8, 0.40),                             # tyre above the rim
                   (1.5, glass_z), (LENGTH / 2, glass_z),   # window, B-pillar
                   (0.2, glass_z),                          # A/C pillar region at the end
                   (0.32 * LENGTH, 0.8), (0.32 * LENGTH + 0.3, 0.8)], axis=1)
    np.testing.assert_allclose(a[0], 0.35, atol=1e-6)
    np.testing.assert_allclose(a[1], 0.35, atol=1e-6)
    np.testing.assert_allclose(a[2], 0.02, atol=1e-6)
    np.testing.assert_allclose(a[3], 0.04, atol=1e-6)     # glass
    assert a[4].sum() > 5 * a[3].sum() and a[5].sum() > 5 * a[3].sum()  # body-coloured pillars
    # The seam is 30 % of the body beside it (up to the body's own noise, <= 30 %).
    assert (a[6] < 0.5 * a[7]).all()
    assert a[7][0] > 0.4 and a[7][2] < a[7][0]             # yellow body


def test_car_front_has_no_wheels():
    """The ends (normal along x, s = y) keep the dark bumper band and no rim."""
    a = albedo_at([(0.8, 0.13), (0.9, 0.8)], axis=0)
    np.testing.assert_allclose(a[0], 0.03, atol=1e-6)      # bumper band, not the rim grey
    assert a[1][0] > 0.4                                   # body colour above it
