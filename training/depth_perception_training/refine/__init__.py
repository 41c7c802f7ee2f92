"""Test-time refinement and diffusion teachers that sharpen training targets.

* :mod:`.normals` - normals from depth (scaled orthographic / perspective), Eq. 5
  disparity -> depth, the Laplacian smoothness term;
* :mod:`.relight` - Blinn-Phong re-lighting in linear RGB with random light and
  material (Eq. 4);
* :mod:`.sds` - score distillation with a Stable Diffusion pipeline (:class:`SDSGuidance`);
* BLIP-2 captions as prompts: :mod:`depth_perception_training.translate.caption`;
* :mod:`.model` - a Depth-Anything-style network split into frozen encoder and DPT
  decoder (:func:`load_refinable`);
* :mod:`.redepth` - the Re-Depth Anything loop with ensembling (:func:`refine_image`);
* :mod:`.marigold` - the Marigold teacher, least-squares alignment, MetricGold
  log-depth normalisation;
* :mod:`.labels` - the pseudo-label format, writer and reader;
* :mod:`.run` / :mod:`.config` - ``depth-perception refine``;
* tiny models for tests and the CPU bench live in :mod:`depth_perception_training.tiny`.

Pseudo labels for a student (instead of a live teacher)::

    from depth_perception_training.refine.labels import PseudoLabels, PseudoLabelDataset
    labels = PseudoLabels("labels/")                  # manifest.json + labels/*.npy
    labels.kind                                       # "metric_depth" (metres) or relative
    depth = labels.get("day-clear", stamp_ns)         # [H,W] float32, NaN = no label
    depth = labels.for_sample(sample)                 # a BagSequence Sample -> label or None
    loader = torch.utils.data.DataLoader(PseudoLabelDataset(labels, size=(W, H)), batch_size=4)
    # batch: image [B,3,H,W] in [0,1], depth [B,1,H,W] metres (0 where invalid), valid [B,1,H,W]

The on-disk format is described in :mod:`.labels`.
"""
