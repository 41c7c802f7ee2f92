"""The pose pretraining task: a pose backbone supervised by the recorded ego-motion.

SPIdepth's "strengthened" pose net is the monodepth2 pose decoder on a *pretrained*
backbone. Without downloads, ``depth-perception train pose`` makes one: the pose net
(:class:`~depth_perception.models.pose.PoseNet`, ``model.pose``) sees the same
time-ordered frame pairs as in teacher training and is supervised with the relative
camera pose of the pair from odometry / TF (the dataset's ``T_src_tgt``):

    L = mean |t_pred - t_odom| (metres) + rotation_weight * mean |R_pred - R_odom| (entries)

Train it on bags *other* than the depth training bags. At the end the backbone is
saved with ``save_pretrained`` to ``output_dir/pose_backbone`` (a transformers folder
with 6 input channels) with the pose decoder beside it (``pose_decoder.safetensors``);
``model.pose: {strengthened: true, pretrained: FOLDER}`` loads it like any pretrained
backbone (and the decoder with it); held-out bags (``data.val_bags``) give the mean
translation (m) and rotation (deg) errors of the pretrained net.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from depth_perception_training.train.config import to_yaml
from depth_perception_training.train.trainer import StepOutput

logger = logging.getLogger(__name__)

BACKBONE_DIR = "pose_backbone"


class PoseObjective:
    """``(models, batch) -> StepOutput``: supervised relative pose of each context pair.

    models: ``{"pose": PoseNet}``; batch: a DepthDataset batch (``image_aug``,
    ``context_aug`` [B,n,3,H,W], ``T_src_tgt`` [B,n,4,4] from odometry, ``offsets``).
    """

    def __init__(self, offsets: list[int], rotation_weight: float = 10.0):
        self.offsets = [int(o) for o in offsets]
        self.rotation_weight = float(rotation_weight)

    def predict(self, pose_net, target: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """[B,n,4,4] predicted T_src_tgt (monodepth2 ordering and inversion rule)."""
        from depth_perception_training.geometry import ordered_pair, pose_vec_to_matrix

        B, n = context.shape[:2]
        pairs = [ordered_pair(target, context[:, i], o) for i, o in enumerate(self.offsets)]
        earlier = torch.cat([p[0] for p in pairs], 0)                    # [n*B,3,H,W]
        later = torch.cat([p[1] for p in pairs], 0)
        axisangle, translation = pose_net(earlier, later, pairs=n)
        return torch.stack([pose_vec_to_matrix(axisangle[i * B:(i + 1) * B],
                                               translation[i * B:(i + 1) * B],
                                               invert=pairs[i][2]) for i in range(n)], 1)

    @staticmethod
    def errors(T_pred: torch.Tensor, T_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair translation error (m) and rotation angle error (deg): [B,n] each."""
        t_err = torch.linalg.vector_norm(T_pred[..., :3, 3] - T_gt[..., :3, 3], dim=-1)
        R = T_pred[..., :3, :3].transpose(-1, -2) @ T_gt[..., :3, :3]
        cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
        return t_err, torch.rad2deg(torch.acos(cos))

    def __call__(self, models: dict, batch: dict) -> StepOutput:
        T_gt = batch["T_src_tgt"].float()                                # [B,n,4,4]
        T = self.predict(models["pose"], batch["image_aug"], batch["context_aug"])
        loss_t = (T[..., :3, 3] - T_gt[..., :3, 3]).abs().mean()
        loss_r = (T[..., :3, :3] - T_gt[..., :3, :3]).abs().mean()
        loss = loss_t + self.rotation_weight * loss_r
        t_err, r_err = self.errors(T.detach(), T_gt)
        return StepOutput(loss, {"translation_l1": loss_t.detach(), "rotation_l1": loss_r.detach(),
                                 "translation_error_m": t_err.mean(),
                                 "rotation_error_deg": r_err.mean()})


@torch.no_grad()
def evaluate_pose(pose_net, loader, objective: PoseObjective) -> dict:
    """Mean translation (m) and rotation (deg) error of ``pose_net`` over ``loader``,
    and the same errors of a "no motion" prediction (identity) for reference."""
    was = pose_net.training
    pose_net.eval()
    sums = {"translation_error_m": 0.0, "rotation_error_deg": 0.0, "still_translation_m": 0.0}
    n = 0
    for batch in loader:
        T_gt = batch["T_src_tgt"].float()
        t_err, r_err = objective.errors(objective.predict(pose_net, batch["image"],
                                                          batch["context"]), T_gt)
        sums["translation_error_m"] += float(t_err.sum())
        sums["rotation_error_deg"] += float(r_err.sum())
        sums["still_translation_m"] += float(torch.linalg.vector_norm(T_gt[..., :3, 3], dim=-1).sum())
        n += t_err.numel()
    pose_net.train(was)
    if n == 0:
        raise ValueError("pose evaluation: no sample in the validation bags")
    return {k: v / n for k, v in sums.items()} | {"pairs": n}


def build_pose_trainer(cfg):
    """(Trainer, objective, validation loader or None) of the pose task."""
    from depth_perception.models import build_pose_model
    from depth_perception_training.train.teacher import (build_datasets, freeze_unused_parameters,
                                                         set_initial_motion, start_run)
    from depth_perception_training.train.trainer import (Trainer, build_train_loader,
                                                         build_val_loader)

    # 1. Config, bags, seed, model
    dcfg, cfg, train_bags, val_bags, out, accelerator = start_run(cfg, "pose")
    try:
        pose_net = build_pose_model(dict(cfg.model.pose))
    except ValueError as exc:
        raise ValueError(f"model.pose: {exc}") from exc
    if cfg.model.init_forward_motion is not None:
        set_initial_motion(pose_net, cfg.model.init_forward_motion)
    probe = torch.zeros(1, 3, cfg.data.height, cfg.data.width)
    freeze_unused_parameters(pose_net, probe, probe)
    objective = PoseObjective(cfg.data.context)
    # 2. Data (the ego-motion comes with every sample)
    train_set, val_set = build_datasets(cfg, train_bags, val_bags)
    train_loader = build_train_loader(train_set, cfg.data.batch_size, seed=cfg.seed,
                                      num_workers=cfg.data.num_workers)
    val_loader = (build_val_loader(val_set, cfg.data.val_batch_size, cfg.data.num_workers)
                  if val_set is not None and len(val_set) else None)

    # 3. Export: the backbone as a transformers folder
    def export(models: dict, folder: Path) -> None:
        models["pose"].save_pretrained(folder.parent / BACKBONE_DIR)

    trainer = Trainer(cfg.trainer, cfg.optim, {"pose": pose_net},
                      pose_net.param_groups(cfg.optim.lr_pose), train_loader, objective, out,
                      export_fn=export, accelerator=accelerator, config_yaml=to_yaml(dcfg))
    return trainer, objective, val_loader


def pretrain_pose(bags, val_bags, output_dir, overrides=()) -> dict:
    """``config/train/pose_tiny.yaml`` on ``bags`` into ``output_dir`` (see :func:`train_pose`)."""
    from depth_perception_training import resolve_config
    from depth_perception_training.train.config import load_config

    cfg = load_config(resolve_config("pose_tiny.yaml", "train"),
                      [f"output_dir={output_dir}", f"data.bags=[{','.join(map(str, bags))}]",
                       f"data.val_bags=[{','.join(map(str, val_bags))}]", *overrides])
    return train_pose(cfg)


def train_pose(cfg) -> dict:
    """Pretrain a pose backbone; returns {"result", "backbone" folder, "validation"}."""
    trainer, objective, val_loader = build_pose_trainer(cfg)
    result = trainer.fit()
    folder = Path(trainer.output_dir) / BACKBONE_DIR
    validation = None
    if val_loader is not None and trainer.accelerator.is_main_process:
        net = trainer.eval_models()["pose"]
        validation = evaluate_pose(net, val_loader, objective)
        logger.info("pose validation: translation error %.3f m (still: %.3f m), rotation "
                    "error %.3f deg over %d pairs", validation["translation_error_m"],
                    validation["still_translation_m"], validation["rotation_error_deg"],
                    validation["pairs"])
    return {"result": result, "backbone": folder, "validation": validation}
