"""MetricGold (``train metricgold``): the pieces of Marigold's step worked by hand, a tiny
fine-tuning whose loss falls, and its exported pipeline decoding to metres for the
pseudo-label path."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from depth_perception_training.train.metricgold import (MetricGoldObjective,
                                                        MetricGoldPredictor, multi_res_noise,
                                                        widen_conv_in)


def test_multi_res_noise_has_unit_std_and_low_frequencies():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(4, 4, 64, 64, generator=g)
    noise = multi_res_noise((4, 4, 64, 64), 0.9, generator=torch.Generator().manual_seed(0))
    assert noise.shape == (4, 4, 64, 64) and noise.std().item() == pytest.approx(1.0, abs=1e-5)

    def neighbour_corr(x):                  # correlation of horizontally adjacent values
        a, b = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert abs(neighbour_corr(white)) < 0.05 and neighbour_corr(noise) > 0.15
    # strength per sample ([B] tensor, the annealed t / T): 0 leaves two white layers
    per_sample = multi_res_noise((2, 4, 64, 64), torch.tensor([0.0, 0.9]))
    assert abs(neighbour_corr(per_sample[0])) < 0.05 and neighbour_corr(per_sample[1]) > 0.15


def test_widened_conv_in_sees_a_doubled_latent_as_the_original_saw_one():
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)

    class Unet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in, self.seen = conv, {}

        def register_to_config(self, **kw):
            self.seen.update(kw)
    unet = Unet()
    x = torch.randn(1, 4, 5, 7)
    before = conv(x)
    widen_conv_in(unet)
    assert unet.conv_in.in_channels == 8 and unet.seen == {"in_channels": 8}
    torch.testing.assert_close(unet.conv_in(torch.cat([x, x], 1)), before)
    widen_conv_in(unet)                                   # already 8: unchanged
    assert unet.conv_in.in_channels == 8


def test_iter_exponential_by_hand():
    from depth_perception_training.train.optim import iter_exponential

    f = iter_exponential(10, 0.01, warmup=2)
    assert [f(0), f(1), f(2)] == [0.0, 0.5, 1.0]
    assert f(6) == pytest.approx(0.1)                     # 0.01 ** (4 / 8)
    assert f(10) == f(50) == 0.01
    with pytest.raises(ValueError, match="warmup"):
        iter_exponential(5, 0.01, warmup=5)


def _objective(**kw):
    from depth_perception_training.tiny import tiny_sd_components
    from depth_perception_training.train.metricgold import (empty_text_embedding,
                                                            training_scheduler)
    parts = tiny_sd_components(seed=0)
    widen_conv_in(parts["unet"])
    text = empty_text_embedding(parts["tokenizer"], parts["text_encoder"])
    return MetricGoldObjective(parts["vae"], training_scheduler(parts["scheduler_config"]),
                               text, 1.0, 80.0, **kw), parts


def test_log_depth_and_latent_cells_of_the_ground_truth():
    objective, _ = _objective()
    depth = torch.tensor([[[[1.0, math.sqrt(80.0), 80.0, 0.5, 90.0, math.inf, math.nan,
                             4.0]]]])
    n, valid = objective.log_depth(depth)
    np.testing.assert_allclose(n[0, 0, 0, :4].numpy(), [-1.0, 0.0, 1.0, -1.0], atol=1e-6)
    assert n[0, 0, 0, 4:7].tolist() == [1.0, 1.0, 1.0]    # no depth: far, and not valid
    assert valid[0, 0, 0].tolist() == [True] * 4 + [False] * 3 + [True]
    # one pixel without ground truth takes its latent cell (factor 2 here) out of the loss
    image = torch.rand(1, 3, 8, 8)
    gt = torch.full((1, 1, 8, 8), 10.0)
    gt[0, 0, 5, 2] = math.inf
    image_latent, depth_latent, cells = objective.latents(image, gt)
    assert image_latent.shape == depth_latent.shape == cells.shape == (1, 4, 4, 4)
    assert (~cells).sum() == 4 and not cells[0, :, 2, 1].any()
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        objective.latents(torch.rand(1, 3, 8, 7), torch.ones(1, 1, 8, 7))


def test_the_target_follows_the_schedulers_prediction_type():
    """v-prediction: the UNet is asked for alpha_t noise - sigma_t x0 (diffusers'
    get_velocity), not for the noise."""
    objective, parts = _objective()
    assert objective.scheduler.config.prediction_type == "v_prediction"
    image_latent, depth_latent, cells = objective.latents(torch.rand(1, 3, 8, 8),
                                                          torch.full((1, 1, 8, 8), 5.0))
    t, noise = torch.tensor([999]), torch.randn_like(depth_latent)

    class Echo(torch.nn.Module):             # predicts exactly what it is asked to
        def forward(self, x, timesteps, text):
            class Out:
                sample = objective.scheduler.get_velocity(depth_latent, noise, timesteps)
            return Out()
    assert objective.loss(Echo(), image_latent, depth_latent, cells, t, noise).item() == 0.0
    alpha = objective.scheduler.alphas_cumprod[999]
    assert alpha.item() == pytest.approx(0.0, abs=1e-6)   # zero terminal SNR: v = -x0 at T
    torch.testing.assert_close(objective.scheduler.get_velocity(depth_latent, noise, t),
                               -depth_latent, atol=1e-3, rtol=0)


def test_predictor_decodes_the_pipeline_output_as_log_depth():
    class Pipeline:
        device = torch.device("cpu")

        def set_progress_bar_config(self, **kw):
            pass

        def __call__(self, image, **kw):
            class Out:
                prediction = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 1, 3)
            return Out()
    depth = MetricGoldPredictor(Pipeline(), 1.0, 80.0).predict_tensor(torch.zeros(1, 3, 1, 3))
    np.testing.assert_allclose(depth.flatten().numpy(), [1.0, math.sqrt(80.0), 80.0], rtol=1e-5)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from depth_perception.synth import make_synthetic_bags

    root = tmp_path_factory.mktemp("metricgold")
    train = make_synthetic_bags(root / "train", frames=8, size=(128, 64),
                                conditions=("day-clear",), seed=3)[0]
    val = make_synthetic_bags(root / "val", frames=4, size=(128, 64),
                              conditions=("day-clear",), seed=4)[0]
    return root, train, val


def test_tiny_fine_tuning_lowers_the_loss_and_exports_a_metric_model(drive):
    """40 steps of metricgold_tiny.yaml: the loss on a fixed batch, timesteps and noise
    falls; the exported pipeline gives metres in the log range at the frame size; the
    refine verb writes them as metric pseudo-labels."""
    from depth_perception import cli
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.metricgold import build_metricgold_trainer
    from depth_perception_training.refine.labels import PseudoLabels

    root, train, val = drive
    torch.set_num_threads(1)
    cfg = load_config("metricgold_tiny.yaml", [f"data.bags=[{train}]", f"data.val_bags=[{val}]",
                                               f"output_dir={root / 'run'}"])
    trainer, objective, _ = build_metricgold_trainer(cfg)
    batch = next(iter(trainer.val_loader))
    g = torch.Generator().manual_seed(1)
    image_latent, depth_latent, cells = objective.latents(batch["image"], batch["gt_depth"])
    t = torch.tensor([100, 700])
    noise = torch.randn(depth_latent.shape, generator=g)

    def fixed_loss() -> float:
        with torch.no_grad():
            return objective.loss(trainer.models["unet"], image_latent, depth_latent, cells, t,
                                  noise).item()
    before = fixed_loss()
    result = trainer.fit()
    after = fixed_loss()
    assert result.step == 40 and result.nan_skips == 0
    assert after < 0.7 * before, (before, after)    # 0.51-0.60 over seeds 0-4
    # validation ran at the end, beside the image-blind prior
    assert result.validation["all"]["n_images"] == 4 and "prior" in result.validation
    info = json.loads((result.export_dir / "metricgold.json").read_text())
    assert (info["min_depth"], info["max_depth"], info["encoding"]) == (1.0, 80.0, "log_depth")
    predictor = MetricGoldPredictor.load(result.export_dir)
    rgb = (batch["image"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    depth = predictor.predict(rgb)
    assert depth.shape == (32, 64) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 1.0 - 1e-4 and depth.max() <= 80.0 + 1e-3
    # the pseudo-label path: refine method metricgold writes metric labels as they are
    out = root / "labels"
    assert cli.main(["refine", "--bag", str(val), "--out", str(out), "method=metricgold",
                     f"metricgold.model={result.export_dir}", "metricgold.steps=1",
                     "data.max_frames=2", "labels.encoding=log_depth"]) == 0
    labels = PseudoLabels(out)
    assert (len(labels), labels.kind, labels.source, labels.encoding) == (
        2, "metric_depth", "metricgold", "log_depth")
    label = labels.load(labels.frames[0])
    assert np.isfinite(label).all() and 1.0 - 1e-3 <= label.min() and label.max() <= 80.0 + 0.1


def test_a_missing_model_folder_says_what_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="train metricgold"):
        MetricGoldPredictor.load(tmp_path)
