"""Translation building blocks without diffusion models: tiled depth fusion, the
depth-consistency check, photometric synthesis, seeds and shards, manifest crash
safety, configuration errors."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from depth_perception.synth import SynthConfig, SyntheticStreet
from depth_perception_training.translate import manifest, photometric
from depth_perception_training.translate.config import (PhotometricConfig,
                                                        load_translate_config)
from depth_perception_training.translate.consistency import (ConsistencyCheck,
                                                             consistency_score)
from depth_perception_training.translate.control_depth import (ControlDepth, FusedDepth,
                                                               align_affine, blend_weights,
                                                               control_image, fuse_tiles,
                                                               tile_boxes)
from depth_perception_training.translate.sources import sample_seed, shard


@pytest.fixture(scope="module")
def street():
    """A synthetic street frame: day and night renderings and its true disparity."""
    s = SyntheticStreet(SynthConfig(size=(256, 128), seed=0), frames=12)
    depth = s.geometry(0).depth
    disparity = np.where(np.isfinite(depth), 1.0 / np.maximum(depth, 0.1), 0.0)
    return {"day": s.render(0, "day-clear")[0], "night": s.render(0, "night")[0],
            "disparity": disparity, "street": s}


class AffineInvariantDepth:
    """Stands in for MiDaS: sees each input at a fixed low resolution and returns relative
    depth in its own arbitrary scale and shift (min-max normalised per input), as an
    affine-invariant model does. Input: images whose red channel encodes disparity."""

    def __init__(self, size=(32, 16)):
        self.size = size

    def __call__(self, crops):
        out = []
        for c in crops:
            h, w = c.shape[:2]
            x = cv2.resize(c[..., 0].astype(np.float64), self.size, interpolation=cv2.INTER_AREA)
            x = 1.0 + 3.0 * (x - x.min()) / (x.max() - x.min() + 1e-9)
            out.append(cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC))
        return out


def _seam(m, boxes, k=4):
    """Largest step at a vertical tile border: the mean |d/dx| of a border column over the
    median of the columns within ``k`` of it inside the tiles (about 1 for a smooth map).
    Horizontal borders are the vertical ones of the transposed map and boxes."""
    g = np.abs(np.diff(m, axis=1)).mean(axis=0)         # [W-1] mean |dx| per column
    borders = sorted({x - 1 for _, x, _, _ in boxes if x > 0}
                     | {x + w - 1 for _, x, _, w in boxes if x + w < m.shape[1]})
    inside = [[g[j] for j in range(b - k, b + k + 1) if j not in borders and 0 <= j < len(g)]
              for b in borders]
    return max(g[b] / np.median(near) for b, near in zip(borders, inside))


def _transposed(boxes):
    return [(x, y, w, h) for y, x, h, w in boxes]


def test_tile_grid_covers_the_frame_like_patchfusion_p49():
    boxes = tile_boxes(900, 1600, 7, 7, 0.5)
    assert len(boxes) == 49
    assert {(h, w) for _, _, h, w in boxes} == {(225, 400)}      # a quarter of the frame
    assert min(y for y, *_ in boxes) == 0 and max(y + h for y, _, h, _ in boxes) == 900
    assert max(x + w for _, x, _, w in boxes) == 1600
    weights = blend_weights(boxes, 900, 1600)
    cover = np.zeros((900, 1600))
    for (y, x, h, w), wt in zip(boxes, weights):
        assert wt.min() > 0
        cover[y:y + h, x:x + w] += wt
    assert cover.min() > 0.2                                    # every pixel blended


def test_fused_depth_has_no_seams_and_follows_the_global_prediction(street):
    disp = street["disparity"]
    rgb = np.repeat((disp / disp.max() * 255).astype(np.uint8)[..., None], 3, axis=2)
    model = AffineInvariantDepth()
    fused = ControlDepth(model, grid=(3, 3), overlap=0.5)(rgb)
    boxes = fused.boxes
    tiles = model([rgb[y:y + h, x:x + w] for y, x, h, w in boxes])
    naive = fuse_tiles(fused.global_pred, tiles, boxes, align=False, blend=False)
    hard = fuse_tiles(fused.global_pred, tiles, boxes, align=True, blend=False)
    assert len({y for y, *_ in boxes}) == len({x for _, x, *_ in boxes}) == 3
    for name, f, n, hd, b in (
            ("vertical", fused.fused, naive, hard, boxes),
            ("horizontal", fused.fused.T, naive.T, hard.T, _transposed(boxes))):
        assert _seam(f, b) < 3.0, name                  # no step at tile borders (1.6 seen)
        assert _seam(n, b) > 3.0, name                  # the check sees raw tiles' seams
        assert _seam(hd, b) > 3.0, name                 # and aligned tiles' hard borders

    def rel(m, ref):
        return np.abs(m - ref).mean() / np.abs(ref - ref.mean()).mean()

    assert rel(fused.fused, fused.global_pred) < 0.1        # follows the global prediction
    assert rel(naive, fused.global_pred) > 0.25
    # and the tiles add the detail the global pass cannot see
    assert (rel(align_affine(fused.fused, disp), disp)
            < rel(align_affine(fused.global_pred, disp), disp))


def test_tile_fusion_maps_each_tile_onto_the_global_scale():
    global_pred = np.tile(np.linspace(0.0, 1.0, 60), (30, 1))        # [30,60]
    boxes = tile_boxes(30, 60, 1, 3, 0.5)
    tiles = [10.0 * global_pred[y:y + h, x:x + w] - 3.0 for y, x, h, w in boxes]
    np.testing.assert_allclose(fuse_tiles(global_pred, tiles, boxes), global_pred, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        fuse_tiles(global_pred, [t[:, :-1] for t in tiles], boxes)


def test_control_image_is_near_bright_min_max_scaled():
    img = control_image(np.array([[0.5, 1.0], [2.0, 3.5]]))
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert img[0, 0, 0] == 0 and img[1, 1, 0] == 255 and img[0, 1, 0] == 43


class LookupDepth:
    """A perfect depth model for known images (the check's own logic under test)."""

    def __init__(self, table):
        self.table = {im.tobytes(): d for im, d in table}

    def __call__(self, rgb):
        d = self.table[rgb.tobytes()]
        return FusedDepth(d, d, [])


def test_consistency_check_rejects_a_moved_object_and_accepts_kept_structure(street):
    day, night, disp = street["day"], street["night"], street["disparity"]
    # an object moved: the nearest blob of the frame cut out and pasted 60 px away
    ys, xs = np.nonzero(disp > np.quantile(disp[disp > 0], 0.97))
    y0, x0 = int(np.median(ys)) - 16, int(np.median(xs)) - 16
    y0, x0 = np.clip(y0, 0, 128 - 32), np.clip(x0, 0, 256 - 32 - 60)
    moved_img, moved_disp = day.copy(), disp.copy()
    for arr, src in ((moved_img, day), (moved_disp, disp)):
        arr[y0:y0 + 32, x0 + 60:x0 + 92] = src[y0:y0 + 32, x0:x0 + 32]
        arr[y0:y0 + 32, x0:x0 + 32] = src[y0:y0 + 32, x0 + 60:x0 + 92]
    # the kept translation's depth differs by scale and shift only (relative models)
    model = LookupDepth([(night, 3.0 * disp + 0.2), (moved_img, moved_disp)])
    check = ConsistencyCheck(model, threshold=0.1)
    kept, moved = check(disp, night), check(disp, moved_img)
    assert kept.accepted and kept.score < 1e-6
    assert not moved.accepted and moved.score > 0.1
    # the same with the source's FusedDepth, and comparing global predictions only
    assert check(FusedDepth(disp, disp, []), moved_img).score == moved.score
    glob = ConsistencyCheck(ControlDepth(lambda crops: [model(c).fused for c in crops]), 0.1,
                            tiled=False)
    assert glob(FusedDepth(disp * 0, disp, []), night).accepted
    assert not glob(FusedDepth(disp * 0, disp, []), moved_img).accepted
    # unrelated maps score about 1, identical maps 0
    rng = np.random.default_rng(0)
    assert 0.7 < consistency_score(rng.random((64, 64)), rng.random((64, 64))) < 1.5
    with pytest.raises(ValueError, match="differ in shape"):
        consistency_score(disp, disp[:, 1:])
    with pytest.raises(ValueError, match="threshold"):
        ConsistencyCheck(model, threshold=0)


@pytest.mark.parametrize("condition", ["night", "rain", "snow"])
def test_photometric_synthesis_keeps_the_frame_and_is_seeded(street, condition):
    day = street["day"]
    cfg = PhotometricConfig()
    out = photometric.synthesize(day, condition, 7, cfg)
    assert out.shape == day.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, photometric.synthesize(day, condition, 7, cfg))
    assert not np.array_equal(out, photometric.synthesize(day, condition, 8, cfg))
    luma_day, luma_out = photometric.luma(day).mean(), photometric.luma(out).mean()
    if condition == "night":
        assert luma_out < 0.5 * luma_day
    else:  # veils lower the contrast
        assert photometric.luma(out).std() < photometric.luma(day).std()
    # the structure survives: edges of the day frame are still where they were
    corr = np.corrcoef(photometric.luma(day).ravel(), photometric.luma(out).ravel())[0, 1]
    assert corr > 0.5
    with pytest.raises(ValueError, match="expected one of"):
        photometric.synthesize(day, "fog", 0, cfg)


def test_night_darkening_reaches_the_target_luma(street):
    out = photometric.darken_to_mean_luma(street["day"], 0.15)
    assert abs(photometric.luma(out).mean() - 0.15) < 0.01
    dark = (street["day"] // 10).astype(np.uint8)
    np.testing.assert_array_equal(photometric.darken_to_mean_luma(dark, 0.15), dark)   # never brightens


def test_seeds_depend_on_the_sample_not_the_order_and_shards_partition():
    a = sample_seed(0, "bag", 123, "night")
    assert a == sample_seed(0, "bag", 123, "night")
    assert len({a, sample_seed(0, "bag", 123, "rain"), sample_seed(1, "bag", 123, "night"),
                sample_seed(0, "bag", 124, "night")}) == 4
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    with pytest.raises(ValueError, match="rank"):
        shard(items, 3, 3)


def test_manifest_survives_a_cut_line_and_merges_by_key(tmp_path):
    rec = {"key": "b/1/night", "bag_id": "b", "stamp_ns": 1, "condition": "night",
           "image": "images/night/b/1.png", "accepted": True}
    manifest.write_image_atomic(tmp_path / rec["image"], np.zeros((4, 6, 3), np.uint8))
    with manifest.ManifestWriter(tmp_path, 0) as w:
        w.append(rec)
    part = tmp_path / "manifest" / "part-00000.jsonl"
    with open(part, "ab") as f:                      # a kill in the middle of a write
        f.write(b'{"key": "b/2/night", "bag_id"')
    assert manifest.done_keys(tmp_path) == {"b/1/night"}
    with manifest.ManifestWriter(tmp_path, 0) as w:  # the next record starts a fresh line
        w.append({**rec, "key": "b/0/rain", "stamp_ns": 0, "condition": "rain"})
    with manifest.ManifestWriter(tmp_path, 1) as w:  # a duplicate from another part
        w.append(rec)
    merged = manifest.merge(tmp_path)
    assert [r["key"] for r in merged] == ["b/0/rain", "b/1/night"]
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["b/0/rain", "b/1/night"]
    assert not list(tmp_path.rglob("*.tmp"))
    # a record whose image is gone is done again
    (tmp_path / rec["image"]).unlink()
    assert "b/1/night" not in manifest.done_keys(tmp_path)


def test_summary_gives_the_rejection_rate_per_condition(tmp_path):
    """3 night samples (2 rejected), 2 rain samples (none rejected), 1 snow sample never
    checked: rates 2/3, 0, 0, written beside the merged manifest."""
    verdicts = {"night": [(0.5, False), (0.1, True), (0.7, False)],
                "rain": [(0.2, True), (0.1, True)], "snow": [(None, True)]}
    with manifest.ManifestWriter(tmp_path, 0) as w:
        for c, vs in verdicts.items():
            for k, (score, ok) in enumerate(vs):
                w.append({"key": f"b/{k}/{c}", "bag_id": "b", "stamp_ns": k, "condition": c,
                          "image": f"images/{c}/b/{k}.png", "consistency": score,
                          "accepted": ok})
    records = manifest.merge(tmp_path)
    assert manifest.read_summary(tmp_path) == manifest.summarize(records) == {"conditions": {
        "night": {"samples": 3, "checked": 3, "rejected": 2, "rejection_rate": 2 / 3},
        "rain": {"samples": 2, "checked": 2, "rejected": 0, "rejection_rate": 0.0},
        "snow": {"samples": 1, "checked": 0, "rejected": 0, "rejection_rate": 0.0}}}


def test_the_paper_recipe_has_no_consistency_filter():
    """SSD's GDT filters nothing: gdt.yaml and the schema leave the check off."""
    assert not load_translate_config("gdt").consistency.enabled
    assert not load_translate_config("photometric").consistency.enabled
    assert load_translate_config("gdt_tiny").consistency.enabled     # exercises the check


def test_config_layers_and_errors_name_the_key(tmp_path):
    cfg = load_translate_config("config/translate/gdt.yaml", ["conditions=[night]"])
    assert cfg.translator == "gdt" and cfg.conditions == ["night"]
    assert cfg.control_depth.grid == [7, 7] and cfg.diffusion.dtype == "auto"
    tiny = load_translate_config("gdt_tiny")
    assert tiny.models.tiny and tiny.diffusion.steps == 2 and tiny.prefixes["rain"]
    with pytest.raises(ValueError, match="diffusion.stepz"):
        load_translate_config("gdt", ["diffusion.stepz=3"])
    with pytest.raises(ValueError, match="day-clear is the source"):
        load_translate_config("photometric", ["conditions=[day-clear]"])
    with pytest.raises(ValueError, match="translator 'gan'"):
        load_translate_config("gdt", ["translator=gan"])
    with pytest.raises(FileNotFoundError, match="shipped translate configs"):
        load_translate_config("nope")


def test_translators_come_from_the_registry_and_declare_their_recipe_keys():
    """An unknown name is refused when the translator is built too (nothing falls
    through to GDT); the rerun check covers the sections every translator declares."""
    from types import SimpleNamespace

    from depth_perception_training.translate.translators import (
        COMMON_RECIPE_KEYS, TRANSLATORS, build_translator, recipe_keys)

    assert list(TRANSLATORS) == ["gdt", "paired", "photometric"]
    keys = recipe_keys()
    assert len(keys) == len(set(keys)) and set(COMMON_RECIPE_KEYS) <= set(keys)
    for cls in TRANSLATORS.values():
        assert set(cls.recipe_keys) <= set(keys)
    assert {"paired", "photometric", "diffusion", "caption", "style"} <= set(keys)
    assert [n for n, c in TRANSLATORS.items() if c.needs_models] == ["gdt"]
    with pytest.raises(ValueError, match="translator 'gan': expected one of gdt, paired"):
        build_translator(SimpleNamespace(translator="gan"), [])
    with pytest.raises(ValueError, match=r"no prompt prefix for \['fog'\]"):
        load_translate_config("gdt", ["conditions=[fog]"])       # GDT's own check


@pytest.mark.parametrize("name", ["gdt_tiny", "photometric"])
def test_translate_without_bags_names_the_key_and_makes_no_data(name, tmp_path):
    """Translation never generates its own frames: no source.bags is an error naming the
    key (and how to make synthetic bags), raised before anything is written."""
    from depth_perception_training.translate.run import run_translate

    cfg = load_translate_config(name, [f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=r"source\.bags is empty.*depth-perception synth"):
        run_translate(cfg)
    with pytest.raises(ValueError, match="source.synth"):      # the old key is gone
        load_translate_config(name, ["source.synth.frames=3"])
    assert not list(tmp_path.iterdir())


def test_depth_anything_v2_is_a_control_depth_option(tmp_path):
    """models.depth may name a Depth Anything V2: the architecture table gives the
    released sizes (Small 24,785,089 parameters, as the hub's checkpoint), and a small
    one built from its config runs through RelativeDepthModel and the tiled fusion."""
    from depth_perception_training.tiny import save_tiny_depth_anything
    from depth_perception_training.translate.control_depth import (
        DEPTH_ANYTHING_V2, RelativeDepthModel, control_depth_architecture)

    small, processor = control_depth_architecture("depth-anything/Depth-Anything-V2-Small-hf")
    assert sum(p.numel() for p in small.parameters()) == 24_785_089
    assert type(small).__name__ == "DepthAnythingForDepthEstimation"
    assert small.config.depth_estimation_type == "relative"
    assert len(DEPTH_ANYTHING_V2) == 3
    with pytest.raises(ValueError, match="no architecture known"):
        control_depth_architecture("someone/unknown-depth")
    folder = save_tiny_depth_anything(tmp_path / "da", metric=False)
    type(processor)(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                    ensure_multiple_of=14).save_pretrained(folder)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    fused = ControlDepth(RelativeDepthModel(str(folder), "cpu", None, True), grid=(2, 2),
                         overlap=0.5)(rgb)
    assert fused.fused.shape == (64, 96) and np.isfinite(fused.fused).all()
    assert len(fused.boxes) == 4 and fused.global_pred.shape == (64, 96)
