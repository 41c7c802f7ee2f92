"""Re-Depth Anything loop, Marigold teacher, alignment, pseudo labels, ``refine`` verb.

Tiny real models from configs (transformers Depth Anything, diffusers Stable Diffusion
and Marigold, BLIP-2), CPU, no downloads.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from depth_perception_training.refine.model import RefinableDepthModel
from depth_perception_training.refine.redepth import RedepthSettings, Refiner, refine_image
from depth_perception_training.refine.sds import SDSGuidance
from depth_perception_training.tiny import tiny_stable_diffusion
from support.models_fixtures import tiny_depth_anything


@pytest.fixture(scope="module")
def guidance():
    p = tiny_stable_diffusion(image_size=32)
    return SDSGuidance(p.vae, p.unet, p.text_encoder, p.tokenizer, p.scheduler)


def _model():
    """Tiny Depth Anything with a sigmoid head (max_depth 1): this package's convention.
    (A random ReLU head of the relative variant outputs 0 everywhere: no gradient.)"""
    return RefinableDepthModel(tiny_depth_anything(metric=True, max_depth=1), "sigmoid_disparity")


def _rgb(h=28, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_one_sds_step_moves_embeddings_and_dpt_but_not_the_encoder(guidance):
    model = _model()
    image, x = model.pixel_values(_rgb(), (56, 28))
    tokens = model.embeddings(x)
    encoder = {k: v.clone() for k, v in model.net.backbone.state_dict().items()}
    decoder = model.decoder_state()
    text = guidance.encode_prompt("a street")
    refiner = Refiner(model, image, tokens, text, guidance, RedepthSettings(smoothness_weight=0.0),
                      torch.Generator().manual_seed(0))
    before = [t.detach().clone() for t in refiner.tokens]
    sds, smooth = refiner.step()
    assert sds > 0 and smooth >= 0          # unweighted terms (the smoothness weight is 0 here)
    for b, t in zip(before, refiner.tokens):                  # all four embeddings moved
        assert not torch.equal(b, t.detach())
    after = model.decoder_state()
    changed = [k for k in decoder if not torch.equal(decoder[k], after[k])]
    assert len(changed) > 0.9 * len(decoder), f"only {len(changed)}/{len(decoder)} DPT tensors moved"
    for k, v in model.net.backbone.state_dict().items():      # encoder bit-identical
        assert torch.equal(v, encoder[k]), k
    assert all(p.grad is None for p in model.net.backbone.parameters())


@pytest.mark.slow
def test_ensemble_is_the_mean_of_independent_runs_and_weights_are_restored(guidance):
    model = _model()
    original = model.decoder_state()
    s = RedepthSettings(steps=1, ensemble=3, lr_head=1e-3, seed=5)
    res = refine_image(model, _rgb(), (56, 28), guidance, "a street", s)
    assert len(res.runs) == 3 and res.raw.shape == (28, 56)
    np.testing.assert_allclose(res.raw, np.mean(res.runs, axis=0), rtol=1e-6)
    assert not np.allclose(res.runs[0], res.runs[1]) and not np.allclose(res.runs[1], res.runs[2])
    assert not np.allclose(res.raw, res.raw_initial)
    for k, v in model.decoder_state().items():
        assert torch.equal(v, original[k]), k
    assert res.seconds_per_step > 0 and res.state_bytes > 0


def test_smoothness_only_refinement_needs_no_diffusion_model_and_smooths():
    model = _model()
    s = RedepthSettings(steps=5, ensemble=1, sds_weight=0.0, lr_head=1e-3, lr_embeddings=1e-2)
    res = refine_image(model, _rgb(seed=3), (56, 28), None, None, s)
    from depth_perception_training.refine.normals import laplacian_smoothness
    lap = lambda a: float(laplacian_smoothness(torch.from_numpy(a)[None, None]))  # noqa: E731
    assert lap(res.raw) < lap(res.raw_initial)
    with pytest.raises(ValueError, match="guidance"):
        refine_image(model, _rgb(), (56, 28), None, None, RedepthSettings(steps=1, ensemble=1))


def test_marigold_labels_after_alignment_follow_its_raw_output():
    from depth_perception_training.refine.marigold import MarigoldTeacher, align_depth
    from depth_perception_training.tiny import tiny_marigold
    teacher = MarigoldTeacher(tiny_marigold(), ensemble=2, steps=1, processing_resolution=32)
    rgb = _rgb(30, 50, seed=4)
    raw = teacher.predict(rgb)
    assert raw.shape == (30, 50) and np.isfinite(raw).all()
    assert not np.allclose(raw, teacher.predict(rgb, seed=1))     # the seed matters
    # sparse "LiDAR" of a scene the tiny model knows nothing about
    rng = np.random.default_rng(0)
    lidar = np.full(raw.shape, np.nan, np.float32)
    idx = rng.random(raw.shape) < 0.2
    lidar[idx] = rng.uniform(2, 40, idx.sum())
    label, fit = align_depth(raw, lidar, "depth", min_depth=1e-3, max_depth=1e6)
    assert np.corrcoef(label.ravel(), raw.ravel())[0, 1] == pytest.approx(np.sign(fit["scale"]), abs=1e-5)
    # alignment lands on the reference scale (least-squares mean matches the LiDAR mean)
    assert np.mean(label[idx]) == pytest.approx(np.mean(lidar[idx]), rel=1e-4)


def test_alignment_recovers_known_affine_maps():
    from depth_perception_training.refine.marigold import align_depth
    gt = np.random.default_rng(1).uniform(2, 60, (20, 30))
    relative_depth = (gt - 3.0) / 20.0
    depth, fit = align_depth(relative_depth, gt, "depth")
    np.testing.assert_allclose(depth, gt, rtol=1e-5)
    assert fit["scale"] == pytest.approx(20.0) and fit["shift"] == pytest.approx(3.0)
    disparity = 0.5 / gt + 0.1
    for space in ("disparity", "disparity_then_depth"):
        depth, _ = align_depth(disparity, gt, space, pred_is_disparity=True)
        np.testing.assert_allclose(depth, gt, rtol=1e-4)
    with pytest.raises(ValueError, match="space"):
        align_depth(disparity, gt, "log")


def test_log_depth_normalisation_round_trips():
    from depth_perception_training.refine.marigold import log_depth_denormalize, log_depth_normalize
    d = np.geomspace(0.1, 80.0, 50)
    n = log_depth_normalize(d, 0.1, 80.0)
    assert n[0] == pytest.approx(-1) and n[-1] == pytest.approx(1)
    assert log_depth_normalize(np.sqrt(0.1 * 80.0), 0.1, 80.0) == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(np.diff(n), np.diff(n)[0])          # equal steps per octave
    np.testing.assert_allclose(log_depth_denormalize(n, 0.1, 80.0), d, rtol=1e-12)
    t = torch.tensor([0.5, 7.0, 33.0], dtype=torch.float64)
    back = log_depth_denormalize(log_depth_normalize(t, 0.1, 80.0), 0.1, 80.0)
    assert torch.allclose(back, t)
    with pytest.raises(ValueError):
        log_depth_normalize(d, 5.0, 1.0)


def test_blip2_caption_from_a_local_folder_is_text(tmp_path):
    from depth_perception_training.translate.caption import Captioner
    from depth_perception_training.tiny import tiny_blip2
    processor, model = tiny_blip2()
    processor.save_pretrained(tmp_path / "blip2")
    model.save_pretrained(tmp_path / "blip2")
    captioner = Captioner.from_pretrained(str(tmp_path / "blip2"), max_new_tokens=4,
                                          prefix="At night, ")
    text = captioner.caption(_rgb())
    assert isinstance(text, str) and text.startswith("At night,")
    with pytest.raises(ValueError, match="uint8"):
        captioner.caption(np.zeros((4, 4), np.float32))


def test_missing_weights_name_the_id_and_how_to_get_them(tmp_path):
    from depth_perception_training.refine.marigold import MarigoldTeacher
    for load in (SDSGuidance.from_pretrained, MarigoldTeacher.from_pretrained):
        with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
            load(str(tmp_path / "not-downloaded"))


def test_perspective_refinement_uses_the_intrinsics():
    model = _model()
    s = RedepthSettings(steps=2, ensemble=1, sds_weight=0.0, camera="perspective")
    with pytest.raises(ValueError, match="intrinsics"):
        refine_image(model, _rgb(), (56, 28), None, None, s)
    K = np.array([[40.0, 0, 27.5], [0, 40.0, 13.5], [0, 0, 1]])
    res = refine_image(model, _rgb(), (56, 28), None, None, s, K=K)
    assert np.isfinite(res.raw).all() and not np.allclose(res.raw, res.raw_initial)


def test_shipped_refine_configs_and_defaults_are_the_published_settings(guidance):
    """Re-Depth Anything and Marigold settings of methods.md, in the dataclass defaults
    and in both shipped YAMLs, and as the optimiser / SDS sampler see them."""
    from depth_perception_training.refine.config import RefineConfig, load_refine_config

    for cfg in (RefineConfig(), load_refine_config(None), load_refine_config("redepth"),
                load_refine_config("marigold")):
        r, g = cfg.redepth, cfg.guidance
        assert (r.lr_embeddings, r.lr_head, r.shift, r.scale) == (1e-3, 2e-6, 0.1, 7.0)
        assert (r.steps, r.ensemble, r.smoothness_weight, r.camera) == (1000, 10, 1.0,
                                                                        "orthographic")
        assert list(g.t_range) == [0.02, 0.6] and g.guidance_scale == 50.0
        assert g.negative_prompt == "" and g.weighting == "uniform"
        assert g.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
        assert cfg.caption.model == "Salesforce/blip2-opt-2.7b" and cfg.caption.prompt is None
        m = cfg.marigold
        assert (m.model, m.ensemble, m.reduction, m.processing_resolution) == (
            "prs-eth/marigold-depth-v1-1", 10, "median", 768)
    assert load_refine_config("redepth").method == "redepth"
    assert load_refine_config("marigold").method == "marigold"
    # what the config becomes: AdamW groups (embeddings, DPT, scale offset), t in 20..600
    s = RedepthSettings()
    assert {k: getattr(s, k) for k in ("steps", "ensemble", "lr_embeddings", "lr_head", "shift",
                                       "scale", "smoothness_weight")} == \
        {"steps": 1000, "ensemble": 10, "lr_embeddings": 1e-3, "lr_head": 2e-6, "shift": 0.1,
         "scale": 7.0, "smoothness_weight": 1.0}
    model = _model()
    image, x = model.pixel_values(_rgb(), (56, 28))
    refiner = Refiner(model, image, model.embeddings(x), guidance.encode_prompt(""), guidance, s,
                      torch.Generator().manual_seed(0))
    assert isinstance(refiner.optimizer, torch.optim.AdamW)
    assert [grp["lr"] for grp in refiner.optimizer.param_groups] == [1e-3, 2e-6, 1e-3]
    assert (guidance.t_min, guidance.t_max) == (20, 600) and guidance.guidance_scale == 50.0


def test_marigold_ensemble_size_reaches_the_pipeline(tmp_path):
    """refine's marigold.ensemble goes through RefineRun and MarigoldTeacher to diffusers:
    with one denoising step the UNet runs once per ensemble member, and ensembles of 3
    and 1 give different depth with the same seed."""
    from depth_perception_training.refine.config import load_refine_config
    from depth_perception_training.refine.run import RefineRun
    from depth_perception_training.tiny import tiny_marigold

    tiny_marigold().save_pretrained(tmp_path / "marigold")
    rgb = _rgb(30, 50, seed=2)
    depths = {}
    for n in (3, 1):
        runner = RefineRun(load_refine_config("marigold", [
            f"marigold.model={tmp_path / 'marigold'}", f"marigold.ensemble={n}",
            "marigold.steps=1", "marigold.processing_resolution=32"]))
        batches = []
        runner.marigold.pipeline.unet.register_forward_hook(
            lambda module, args, out: batches.append(args[0].shape[0]))
        depths[n] = runner.marigold.predict(rgb)
        assert sum(batches) == n and runner.marigold.reduction == "median"
    assert not np.allclose(depths[3], depths[1])
