#!/usr/bin/env python
"""Re-Depth Anything at small scale on CPU: does refinement bring depth closer to GT?

    bench/bench_refine.py [--work DIR] [--unet-minutes 3] [--steps 60] [--ensemble 2]

1. synthetic bags: a day-clear training drive (seed 0) and a held-out drive (seed 7);
2. the depth model: this package's tiny DINOv2+DPT fitted to the training drive's ground
   truth for a few hundred steps (``--model`` to refine another, e.g. a trained teacher);
3. the diffusion prior: a tiny Stable Diffusion (diffusers classes from configs) fitted
   on the training drive's day-clear frames, framed exactly as SDS frames them (zero
   padded to a square): first its VAE (reconstruction + small KL), then its UNet
   (epsilon prediction, one caption, 10 % empty-prompt dropout for guidance);
4. on held-out frames: the unrefined prediction, refinement with the Laplacian term
   only (SDS weight 0: what smoothing alone does), and full refinement (SDS + Laplacian)
   at each ``--guidance-scales``; every map is aligned to the ground truth by least
   squares in disparity, then in depth (the paper's protocol) before abs_rel.

Prints abs_rel per variant, seconds per refinement step and the optimisation-state
memory (optimised parameters + gradients + AdamW moments), with the machine load.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from depth_perception.bench_log import add_record_argument, run_and_record

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "Training"
TITLE = "Refinement at small scale: bench_refine"

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a photo of a street on a clear day"
SIZE = (168, 56)


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def make_bags(work: Path, train_frames: int, eval_frames: int) -> tuple[Path, Path]:
    from depth_perception.synth import make_synthetic_bags
    train = work / "train" / "day-clear"
    held = work / "heldout" / "day-clear"
    if not train.exists():
        make_synthetic_bags(work / "train", frames=train_frames, size=SIZE,
                            conditions=["day-clear"], seed=0)
    if not held.exists():
        make_synthetic_bags(work / "heldout", frames=eval_frames, size=SIZE,
                            conditions=["day-clear"], seed=7)
    return train, held


def train_depth_model(work: Path, bag: Path, steps: int) -> Path:
    """The tiny DINOv2+DPT of this package fitted to the training drive's ground truth
    (L1 on scaled disparity; a quick stand-in for a pretrained Depth Anything)."""
    import torch

    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.models import build_depth_model, depth_config, normalize_image, save_depth_model
    from depth_perception_training.train.teacher import set_initial_depth
    out = work / "depth_model"
    if (out / "metadata.json").is_file():
        return out
    torch.manual_seed(0)
    _, cfg = depth_config({"arch": "dpt", "size": "tiny", "min_depth": 0.1, "max_depth": 80.0})
    net = build_depth_model(cfg)
    net.reset_random_layers()
    set_initial_depth(net, cfg, 10.0)
    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False))
    rgb = np.stack([seq.frame(i) for i in range(len(seq.stamps))])
    gt = np.stack([seq.gt_depth(i) for i in range(len(seq.stamps))])
    x = normalize_image(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0,
                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    valid = torch.from_numpy(np.isfinite(gt) & (gt > 0.1) & (gt < 80.0))[:, None]
    inv = torch.from_numpy(np.where(valid[:, 0].numpy(), 1.0 / np.where(np.isfinite(gt), gt, 1.0),
                                    0.0)).float()[:, None]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    for step in range(steps):
        idx = torch.randint(0, len(x), (4,))
        pred = net(x[idx])["scaled_disp"][0]
        loss = ((pred - inv[idx]).abs() * valid[idx]).sum() / valid[idx].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"depth model: {steps} supervised steps, last L1(disparity) {float(loss):.4f}")
    return save_depth_model(out, net.eval(), cfg)


def day_images(bag: Path, resolution: int):
    """[N,3,R,R] frames in [0,1], resized and zero-padded as SDS does."""
    import torch

    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception_training.refine.sds import pad_to_square
    seq = BagSequence(bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False,
                                        with_gt=False))
    frames = np.stack([seq.frame(i) for i in range(len(seq.stamps))])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return pad_to_square(x, resolution)


def fit_prior(images, seconds_vae: float, seconds_unet: float, seed: int = 0,
              channels: tuple = (16, 32), batch: int = 8):
    """Tiny SD pipeline fitted on ``images``; returns (pipeline, log lines)."""
    import torch
    import torch.nn.functional as F

    from depth_perception_training.tiny import tiny_stable_diffusion
    torch.manual_seed(seed)
    pipe = tiny_stable_diffusion(image_size=images.shape[-1], seed=seed, channels=channels)
    vae, unet, sched = pipe.vae, pipe.unet, pipe.scheduler
    lines = []
    # 1. VAE: reconstruction + 1e-4 KL (keeps the posterior narrow)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    t0, step = time.time(), 0
    while time.time() - t0 < seconds_vae:
        x = images[torch.randint(0, len(images), (batch,))] * 2 - 1
        x = torch.where(torch.rand(batch, 1, 1, 1) < 0.5, x, x.flip(-1))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec, x) + 1e-4 * post.kl().mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        lat = vae.encode(images * 2 - 1).latent_dist.sample()
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    with torch.no_grad():
        rec_mse = float(F.mse_loss(vae.decode(lat).sample, images * 2 - 1))
    lines.append(f"VAE: {step} steps in {time.time() - t0:.0f} s, reconstruction MSE "
                 f"{rec_mse:.4f} (images in [-1,1]), latent scaling "
                 f"{vae.config.scaling_factor:.3f}")
    # 2. UNet: epsilon prediction on the caption, 10 % unconditional
    with torch.no_grad():
        tok = pipe.tokenizer(["", PROMPT], padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
        emb = pipe.text_encoder(tok.input_ids)[0]                       # [2,L,C]
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=5e-4)
    t0, step, losses = time.time(), 0, []
    while time.time() - t0 < seconds_unet:
        x = images[torch.randint(0, len(images), (batch,))]
        x = torch.where(torch.rand(batch, 1, 1, 1) < 0.5, x, x.flip(-1))
        with torch.no_grad():
            z = vae.encode(x * 2 - 1).latent_dist.sample() * vae.config.scaling_factor
        eps = torch.randn_like(z)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,))
        cond = emb[(torch.rand(batch) > 0.1).long()]
        pred = unet(sched.add_noise(z, eps, t), t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
    unet.eval().requires_grad_(False)
    lines.append(f"UNet: {step} steps in {time.time() - t0:.0f} s, epsilon MSE first 20 "
                 f"{np.mean(losses[:20]):.3f} -> last 50 {np.mean(losses[-50:]):.3f}")
    return pipe, lines


def aligned_abs_rel(disp: np.ndarray, gt: np.ndarray) -> float:
    from depth_perception.metrics import compute_depth_metrics, valid_mask
    from depth_perception_training.refine.marigold import align_depth
    ref = np.where(valid_mask(gt, 0.1, 80.0), gt, np.nan)
    depth, _ = align_depth(disp, ref, "disparity_then_depth", pred_is_disparity=True,
                           min_depth=0.1, max_depth=80.0)
    return compute_depth_metrics(gt, depth, 0.1, 80.0)["abs_rel"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="reuse bags/models here")
    ap.add_argument("--model", default=None, help="depth model folder (default: fit the tiny DPT to the training drive)")
    ap.add_argument("--depth-steps", type=int, default=200)
    ap.add_argument("--vae-seconds", type=float, default=45)
    ap.add_argument("--unet-minutes", type=float, default=3)
    ap.add_argument("--resolution", type=int, default=64, help="SDS / prior image size")
    ap.add_argument("--frames", type=int, default=3, help="held-out frames refined")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ensemble", type=int, default=2)
    ap.add_argument("--guidance-scales", default="50")
    ap.add_argument("--threads", type=int, default=2)
    add_record_argument(ap)
    args = ap.parse_args(argv)
    return run_and_record(measure, args, RESULTS, SECTION, TITLE)


def measure(args) -> int:
    """The bench: prints its figures."""
    import tempfile

    import torch
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception_training.refine.model import load_refinable
    from depth_perception_training.refine.redepth import RedepthSettings, refine_image
    from depth_perception_training.refine.sds import SDSGuidance

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_refine_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_refine ({load()}, {args.threads} threads, work {work})")
    train_bag, held_bag = make_bags(work, 60, 4 * args.frames)
    t0 = time.time()
    model_dir = Path(args.model) if args.model else train_depth_model(work, train_bag, args.depth_steps)
    print(f"depth model: {model_dir} ({time.time() - t0:.0f} s)")
    prior_dir = work / f"prior_{args.resolution}"
    if (prior_dir / "model_index.json").is_file():
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(prior_dir, local_files_only=True)
        print(f"prior: reused {prior_dir}")
    else:
        pipe, lines = fit_prior(day_images(train_bag, args.resolution), args.vae_seconds,
                                args.unet_minutes * 60)
        pipe.save_pretrained(prior_dir)
        print("\n".join(f"prior {line}" for line in lines))

    model = load_refinable(model_dir)
    seq = BagSequence(held_bag, SampleConfig(offsets=(), skip_static=False, with_lidar=False))
    chosen = np.linspace(0, len(seq.stamps) - 1, args.frames).round().astype(int)
    variants = [("smoothness only (SDS weight 0)", None, 0.0)]
    variants += [(f"SDS + smoothness, guidance {g}", float(g), 1.0)
                 for g in args.guidance_scales.split(",") if g]
    scores = {"unrefined": []}
    timing = {}
    for name, _, _ in variants:
        scores[name] = []
    for i in chosen:
        rgb, gt = seq.frame(int(i)), seq.gt_depth(int(i))
        base = None
        for name, g, w in variants:
            guidance = None
            if w > 0:
                guidance = SDSGuidance(pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer,
                                       pipe.scheduler, guidance_scale=g)
            settings = RedepthSettings(steps=args.steps, ensemble=args.ensemble, sds_weight=w,
                                       seed=int(i))
            res = refine_image(model, rgb, SIZE, guidance, PROMPT, settings)
            if base is None:
                base = res.raw_initial
                scores["unrefined"].append(aligned_abs_rel(base, gt))
            scores[name].append(aligned_abs_rel(res.raw, gt))
            timing[name] = (res.seconds_per_step, res.state_bytes)
        print(f"frame {i}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()))
        sys.stdout.flush()

    print(f"\n## aligned abs_rel on {len(chosen)} held-out synthetic day-clear frames at "
          f"{SIZE[0]}x{SIZE[1]} ({args.steps} steps x ensemble {args.ensemble}; lower is better)")
    base = np.mean(scores["unrefined"])
    for name, v in scores.items():
        rel = (np.mean(v) - base) / base * 100
        better = sum(a < b for a, b in zip(v, scores["unrefined"]))
        print(f"{name:38s} {np.mean(v):.4f}  ({rel:+.1f} % vs unrefined; better on "
              f"{better}/{len(v)} frames)" if name != "unrefined" else f"{name:38s} {np.mean(v):.4f}")
    print(f"\n## cost ({load()})")
    for name, (sps, nbytes) in timing.items():
        print(f"{name:38s} {sps * 1000:.1f} ms/step, optimisation state {nbytes / 2**20:.2f} MiB")
    n_dec = sum(p.numel() for p in model.decoder_parameters())
    print(f"DPT neck+head parameters {n_dec}, UNet parameters "
          f"{sum(p.numel() for p in pipe.unet.parameters())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
