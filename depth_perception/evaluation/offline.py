"""Offline evaluation: read bags, predict depth with the runtime, score per condition.

Frames come from the data layer (:class:`depth_perception.data.samples.BagSequence`:
image, intrinsics, LiDAR depth projected through TF, ground-truth depth, condition).
With a model, every frame goes through :class:`depth_perception.runtime.estimator.DepthEstimator`
(the depth node's pre-processing, backend and post-processing), so the scores are those
of the node. With a prediction topic, depth images recorded in the bag are scored
(matched to the frame by header stamp).

    results = evaluate(["bags/night"], EvaluateConfig(reference="lidar", prior="bags",
                                                      prior_bags=("bags/train",)),
                       models=[ModelSpec("model.onnx", "onnxruntime")])
    write_report(results, "out/")
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from depth_perception.evaluation.ground_truth import LIDAR, parse_reference
from depth_perception.evaluation.report import EvaluationResults

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    """Protocol and inputs of an evaluation run."""

    min_depth: float = 0.1
    max_depth: float = 80.0
    median_scaling: bool = False
    align: str | None = None
    #: "lidar" or a dense depth topic (e.g. /ground_truth/depth)
    reference: str = LIDAR
    #: override the condition recorded in the bags
    condition: str | None = None
    #: frames per bag (0: all) and frame stride
    max_frames: int = 0
    stride: int = 1
    #: a recorded prediction matches a frame when the stamps differ by at most this
    prediction_tolerance_s: float = 0.001
    lidar_topic: str = "/lidar/points"
    image_topic: str = "/camera/image_raw"
    camera_info_topic: str = "/camera/camera_info"
    #: what the images are (rectify.INPUT_IMAGES): "raw" ones are rectified with the
    #: CameraInfo's calibration by the depth node's rectifier; the reference is scored
    #: in the rectified camera (a synthetic bag's ground truth is in that geometry)
    input_image: str = "raw"
    #: index (within each condition) of the frame shown in the sample figure
    sample_index: int = 0
    #: image-blind prior row (per-pixel median reference depth) and structure-pixel
    #: abs_rel: "none", "bags" (over ``prior_bags``, e.g. the training bags) or "loo"
    #: (leave-one-out: each evaluated bag gets the prior of the other evaluated bags)
    prior: str = "none"
    prior_bags: tuple = ()
    #: prediction clamp (None: [min_depth, max_depth]) and the scored crop of the
    #: reference image, (top, bottom, left, right) fractions
    clamp: tuple | None = None
    crop: tuple | None = None
    #: how LiDAR scans become reference images (data.projection.LIDAR_RULES) and
    #: whether scans are moved to the image time through odometry
    lidar_rule: str = "nearest"
    motion_compensation: bool = True
    #: median of median scaling (metrics.MEDIANS)
    median: str = "numpy"
    #: name of the preset these settings come from (:meth:`for_protocol`)
    protocol: str | None = None
    #: also score every model after the depth node's temporal fusion (a "<model> +
    #: fusion" row; the node's fusion_threshold / fusion_max_age)
    temporal_fusion: bool = False
    fusion_threshold: float = 0.1
    fusion_max_age: int = 8

    @classmethod
    def for_protocol(cls, name: str, **settings) -> "EvaluateConfig":
        """The settings of preset ``name`` (:mod:`~depth_perception.evaluation.protocols`)
        plus ``settings`` that the preset leaves open (bags, topics, frames, prior).
        A setting the preset fixes (range, clamp, crop, scaling, reference) is refused."""
        from depth_perception.evaluation.protocols import get_protocol

        p = get_protocol(name)
        fixed = {"min_depth": p.min_depth, "max_depth": p.max_depth, "clamp": p.clamp,
                 "crop": p.crop, "median_scaling": p.median_scaling, "align": None,
                 "reference": p.reference, "lidar_rule": p.lidar_rule,
                 "motion_compensation": p.motion_compensation, "median": p.median,
                 "protocol": p.name}
        clash = sorted(k for k in settings if k in fixed)
        if clash:
            raise ValueError(f"evaluate: protocol {name} fixes {', '.join(clash)}; drop "
                             "them or evaluate without --protocol")
        return cls(**fixed, **settings)

    def __post_init__(self):
        if self.stride < 1 or self.max_frames < 0:
            raise ValueError(f"evaluate: need stride >= 1 and max_frames >= 0, got "
                             f"{self.stride}, {self.max_frames}")
        self.spec = parse_reference(self.reference, self.lidar_topic)
        if self.prior not in ("none", "bags", "loo"):
            raise ValueError(f"evaluate: prior must be none, bags or loo, got {self.prior!r}")
        if self.prior == "bags" and not self.prior_bags:
            raise ValueError("evaluate: prior 'bags' needs prior_bags (--prior-bags B ...)")

    def new_results(self) -> EvaluationResults:
        return EvaluationResults(self.min_depth, self.max_depth, self.median_scaling,
                                 self.align, sample_index=self.sample_index,
                                 reference=self.spec.label, clamp=self.clamp, crop=self.crop,
                                 protocol=self.protocol, median=self.median)


@dataclass
class ModelSpec:
    """A model to score: file/folder, runtime backend, row name in the report."""

    model: str
    backend: str = "auto"
    name: str | None = None
    #: DepthEstimator.load options (e.g. short_side, max_pixels): use the depth node's
    #: values (input_short_side, input_max_pixels) to score exactly what it publishes
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        stem = Path(self.model.rstrip("/")).name
        return stem if self.backend == "auto" else f"{stem} [{self.backend}]"


def parse_model_spec(text: str, default_backend: str = "auto", name: str | None = None,
                     options: dict | None = None) -> ModelSpec:
    """``MODEL`` or ``MODEL@BACKEND`` -> ModelSpec."""
    model, _, backend = text.partition("@")
    return ModelSpec(model, backend or default_backend, name, dict(options or {}))


def static_tf_from_bag(path, buffer=None):
    """Only the bag's /tf_static transforms, into ``buffer`` (a new TfBuffer if None).

    For a live evaluator on machines where tf2_msgs is missing (no /tf_static over DDS):
    the motion still comes live from /odom.
    """
    from depth_perception.data.bag import BagReader
    from depth_perception.data.tf import TfBuffer

    buffer = buffer if buffer is not None else TfBuffer()
    with BagReader(path) as reader:
        if not reader.has("tf_static"):
            raise ValueError(f"bag {reader.path}: no /tf_static messages on "
                             f"'{reader.topic_name('tf_static')}'; topics in the bag: "
                             f"{reader.available_topics}")
        for i in range(reader.count("tf_static")):
            buffer.add_tf_message(reader.message("tf_static", i), static=True)
    return buffer


def _topics(config: EvaluateConfig, gt_topic: str | None = None):
    from depth_perception.data.bag import BagTopics

    kw = {"image": config.image_topic, "camera_info": config.camera_info_topic,
          "lidar": config.lidar_topic}
    if gt_topic:
        kw["gt_depth"] = gt_topic
    return BagTopics(**kw)


def open_sequence(bag, config: EvaluateConfig):
    """BagSequence over every frame of ``bag`` with the configured reference.

    Raises ValueError naming the bag and topic when the reference is not in the bag.
    """
    from depth_perception.data.bag import BagReader
    from depth_perception.data.samples import BagSequence, SampleConfig

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    lidar = config.spec.kind == LIDAR
    topics = _topics(config, None if lidar else config.spec.topic)
    with BagReader(bag, topics) as reader:      # check the reference topic up front
        reader.require("image")
        reader.require("camera_info")
        reader.require("lidar" if lidar else "gt_depth")
    sample_config = SampleConfig(offsets=(), skip_static=False, with_lidar=lidar,
                                 with_gt=True, with_moving=True,
                                 condition=config.condition, topics=topics,
                                 input_image=config.input_image, keep_raw=True,
                                 lidar_rule=config.lidar_rule,
                                 motion_compensation=config.motion_compensation)
    return BagSequence(bag, sample_config)


def _reference(sample, config: EvaluateConfig, bag) -> np.ndarray:
    ref = sample.lidar_depth if config.spec.kind == LIDAR else sample.gt_depth
    if ref is None:
        raise ValueError(f"bag {bag}: frame {sample.index} has no reference depth from "
                         f"{config.spec.label}")
    return ref


def _frame_indices(n: int, config: EvaluateConfig) -> list[int]:
    idx = list(range(0, n, config.stride))
    return idx[: config.max_frames] if config.max_frames else idx


def _priors(bags, config: EvaluateConfig) -> dict:
    """{bag path: [H,W] image-blind prior} for ``config.prior`` (empty for "none")."""
    from depth_perception.evaluation import prior as prior_mod

    ref = LIDAR if config.spec.kind == LIDAR else config.spec.topic
    kw = {"min_depth": config.min_depth, "max_depth": config.max_depth,
          "lidar_topic": config.lidar_topic}
    if config.prior == "bags":
        prior = prior_mod.prior_from_bags(config.prior_bags, ref, **kw)
        return {str(b): prior for b in bags}
    if config.prior == "loo":
        return prior_mod.leave_one_out_priors(bags, ref, **kw)
    return {}


def _score_bag(bag, config: EvaluateConfig, results: EvaluationResults, predictors: dict,
               timings: dict, prior=None) -> None:
    """Score every frame of one bag with every predictor (name -> callable(sample)).

    prior: [H,W] image-blind prior: scored as one more row, and its structure pixels
    give every row ``abs_rel_structure``.
    """
    from depth_perception.data.tf import TransformError
    from depth_perception.evaluation.prior import PRIOR_NAME, fit_to
    from depth_perception.evaluation.temporal import TemporalTracker
    from depth_perception.metrics import structure_mask
    from depth_perception.runtime.estimator import DepthResult

    seq = open_sequence(bag, config)
    if prior is not None:
        predictors = {**predictors, PRIOR_NAME: lambda sample: fit_to(prior, sample.image.shape[:2])}
    fusions = {name: FusedStream(seq, config, getattr(predict, "estimator", None))
               for name, predict in predictors.items()
               if config.temporal_fusion and name != PRIOR_NAME}
    scored = {row: 0 for name in predictors
              for row in ((name, fused_name(name)) if name in fusions else (name,))}
    failed: dict = {}
    empty = 0
    tracker = TemporalTracker(results, seq.intrinsics, Path(bag).name)
    for position, i in enumerate(_frame_indices(len(seq), config)):
        try:
            sample = seq[i]
        except TransformError as exc:
            raise ValueError(
                f"bag {bag}: no LiDAR reference for frame {i}: {exc}. Expected a TF chain "
                f"from the LiDAR frame '{seq.lidar_frame}' to the camera frame "
                f"'{seq.camera_frame}' on /tf_static, /tf or /odom") from exc
        ref = _reference(sample, config, bag)
        compare = results.scored_mask(ref)
        tracker.frame(position, seq.poses[sample.index], compare, sample.moving,
                      sample.gt_depth)
        has_reference = bool(compare.any())
        if not has_reference:
            empty += 1
            log.warning("bag %s frame %d: no valid reference pixel in %s; frame skipped%s",
                        bag, i, config.spec.label,
                        " (fused streams still take it in, as the node does)" if fusions
                        else "")
        structure = None if prior is None or not has_reference else structure_mask(
            fit_to(prior, ref.shape), ref)
        condition = sample.condition or "unknown"
        for name, predict in predictors.items():
            if not has_reference and name not in fusions:
                continue
            t0 = time.perf_counter()
            try:
                pred = predict(sample)
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
                if pred is None:
                    continue
                result = pred if isinstance(pred, DepthResult) else None
                pred, confidence = ((result.depth, result.confidence) if result is not None
                                    else pred if isinstance(pred, tuple) else (pred, None))
                rows = [(name, pred, confidence)]
                if name in fusions:               # the node's temporal fusion of it
                    fused = fusions[name].update(sample, pred, result)
                    # the node's confidence_source 'auto': the model's, else the fusion's
                    rows.append((fused_name(name), fused.depth,
                                 fused.confidence if confidence is None else confidence))
            except (RuntimeError, ValueError) as exc:
                # as the node: a failed frame (NaN output, no valid prediction) is counted
                # and the evaluation goes on
                failed[name] = failed.get(name, 0) + 1
                log.warning("bag %s frame %d: '%s' not scored: %s", bag, i, name, exc)
                continue
            for row, depth, conf in rows if has_reference else ():
                try:
                    metrics = results.add_frame(row, ref, depth, condition, Path(bag).name,
                                                sample.index, sample.stamp_ns, sample.image,
                                                structure=structure, confidence=conf,
                                                moving=sample.moving)
                except ValueError as exc:
                    failed[row] = failed.get(row, 0) + 1
                    log.warning("bag %s frame %d: '%s' not scored: %s", bag, i, row, exc)
                    continue
                tracker.add(row, position, depth, metrics, condition, sample.index,
                            sample.stamp_ns)
                scored[row] += 1
    for name, n in scored.items():
        if n == 0:
            raise ValueError(
                f"bag {bag}: no frame could be scored for '{name}' ({len(seq)} frames, "
                f"{empty} without any valid reference pixel in {config.spec.label} within "
                f"{config.min_depth}-{config.max_depth} m, {failed.get(name, 0)} failed "
                f"predictions)")
        if failed.get(name):
            info = results.models[name].info
            info["frames_failed"] = info.get("frames_failed", 0) + failed[name]
    log.info("bag %s: scored %s frames", bag, scored)


def fused_name(name: str) -> str:
    """Report row of a stream after the node's temporal fusion."""
    return f"{name} + fusion"


class FusedStream:
    """One stream of one bag through the depth node's temporal fusion
    (:class:`~depth_perception.runtime.fusion.TemporalFusion`, the node's parameters),
    with the camera motion between consecutive fused frames from the bag's TF, composed
    as the node composes it from live TF (camera in the world frame at both stamps).
    A model's frames are fused as the node fuses them, on the model's grid
    (``estimator.fuse``); recorded depth at camera resolution."""

    def __init__(self, seq, config: "EvaluateConfig", estimator=None):
        from depth_perception.runtime.fusion import TemporalFusion

        self.seq, self.estimator = seq, estimator
        self.fusion = TemporalFusion(config.fusion_threshold, config.fusion_max_age)
        self.last: int | None = None                 # image index the state holds

    def update(self, sample, depth: np.ndarray, result=None):
        """The fusion of ``depth`` (``result``: the estimator's DepthResult it came
        from, None for recorded depth) -> its FusionResult."""
        poses, j = self.seq.poses, self.last
        T = None
        if j is not None and poses[j] is not None and poses[sample.index] is not None:
            T = self.seq.relative_pose(sample.index, j)      # T_cur_prev
        self.last = sample.index
        if result is not None and self.estimator is not None:
            return self.estimator.fuse(self.fusion, result, T)
        return self.fusion.update(depth, sample.intrinsics, T)


def _estimator_predictor(spec: ModelSpec):
    from depth_perception.runtime.estimator import DepthEstimator

    return estimator_predictor(DepthEstimator.load(spec.model, backend=spec.backend,
                                                   **spec.options))


def estimator_predictor(estimator):
    """sample -> the DepthResult of ``estimator`` fed as the depth node feeds it: the
    recorded image with its rectifier (one remap to the model input), so online equals
    offline (its depth, the model's confidence if it has one, and what the temporal
    fusion takes)."""
    from depth_perception.runtime.estimator import DepthResult

    def predict(sample):
        result = estimator.estimate(sample.raw, sample.intrinsics, rectifier=sample.rectifier)
        if isinstance(result, DepthResult):
            return result
        return result.depth, getattr(result, "confidence", None)    # an estimator-like object

    predict.estimator = estimator
    return predict


def _topic_predictor(bag, topic: str, config: EvaluateConfig):
    """Depth recorded on ``topic`` matched to each frame by header stamp."""
    from depth_perception.data.bag import BagReader

    reader = BagReader(bag, _topics(config, topic))
    stamps = reader.stamps("gt_depth")            # the prediction topic, via the gt slot
    tol = int(config.prediction_tolerance_s * 1e9)
    missing = []

    def predict(sample):
        j, dt = reader.nearest("gt_depth", sample.stamp_ns)
        if dt > tol:
            missing.append(sample.stamp_ns)
            log.warning("bag %s: no depth on %s within %.1f ms of frame %d (stamp %d)",
                        bag, topic, tol / 1e6, sample.index, sample.stamp_ns)
            return None
        pred = reader.gt_depth(j)
        if pred.shape != sample.image.shape[:2]:
            raise ValueError(f"bag {bag}: depth on {topic} is {pred.shape[1]}x{pred.shape[0]}"
                             f" but the camera image is {sample.image.shape[1]}x"
                             f"{sample.image.shape[0]}")
        return pred

    predict.n_messages = len(stamps)
    predict.reader = reader
    return predict


def evaluate(bags, config: EvaluateConfig | None = None, models=(), prediction_topic=None,
             prediction_name: str | None = None, results: EvaluationResults | None = None,
             estimators: dict | None = None) -> EvaluationResults:
    """Score ``models`` (ModelSpec list) and/or ``prediction_topic`` on ``bags``.

    ``estimators`` maps report names to ready DepthEstimator objects (used as given).
    Returns the EvaluationResults (``write_report`` writes the files). Raises ValueError /
    FileNotFoundError for missing bags, topics, TF links or models.
    """
    config = config or EvaluateConfig()
    bags = [Path(b) for b in bags]
    if not bags:
        raise ValueError("evaluate: no bag given")
    for bag in bags:
        if not bag.exists():
            raise FileNotFoundError(f"bag {bag} does not exist")
    if not models and not prediction_topic and not estimators:
        raise ValueError("evaluate: give a model (--model) or a --prediction-topic")
    results = results or config.new_results()

    # 1. Predictors shared by every bag (models are loaded once).
    predictors = {}
    for spec in models:
        if spec.label in predictors:
            raise ValueError(f"evaluate: two models are named '{spec.label}'; use --name "
                             "or MODEL@BACKEND to tell them apart")
        predictors[spec.label] = _estimator_predictor(spec)
    for name, estimator in (estimators or {}).items():
        predictors[name] = estimator_predictor(estimator)
    timings: dict = {}
    priors = _priors(bags, config)

    # 2. Bags in turn; a recorded prediction topic is read per bag.
    try:
        for bag in bags:
            per_bag = dict(predictors)
            recorded = None
            if prediction_topic:
                name = prediction_name or prediction_topic
                recorded = per_bag[name] = _topic_predictor(bag, prediction_topic, config)
            try:
                _score_bag(bag, config, results, per_bag, timings, priors.get(str(bag)))
            finally:
                if recorded is not None:
                    recorded.reader.close()
        for spec in models:
            est = predictors[spec.label].estimator
            results.models[spec.label].info.update(
                model=str(spec.model), backend=est.backend.name,
                precision=est.backend.precision)
    finally:
        for spec in models:                     # estimators this call opened
            if spec.label in predictors:
                predictors[spec.label].estimator.close()

    # 3. Throughput of each predictor (pre/post-processing and model included)
    for name, seconds in timings.items():
        res = results.models.get(name)
        if res is not None and res.frames:
            res.info["seconds_per_frame"] = seconds / len(res.frames)
    return results
