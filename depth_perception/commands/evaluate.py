"""``depth-perception evaluate``: score models (or recorded depth) on rosbags, per condition."""
from __future__ import annotations

HELP = ("evaluate depth models (through the runtime's DepthEstimator) or a recorded depth "
        "topic on rosbags against LiDAR or ground truth; writes metrics.json, "
        "per_frame.csv, report.md and plots")


def add_arguments(parser) -> None:
    from depth_perception.evaluation.protocols import PROTOCOLS
    from depth_perception.rectify import INPUT_IMAGES
    from depth_perception.runtime.geometry import FOCAL_POLICIES

    parser.add_argument("--bag", action="append", required=True, metavar="BAG",
                        help="rosbag2 folder (repeat for several bags/conditions)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="M",
                     help="model: .onnx, .engine, checkpoint folder or transformers folder")
    src.add_argument("--prediction-topic", metavar="TOPIC",
                     help="score depth images recorded in the bag on TOPIC (matched by stamp)")
    parser.add_argument("--backend", default="auto",
                        help="runtime backend for --model/--compare: auto|onnxruntime|torch|"
                             "tensorrt (default auto)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="M2",
                        help="more models scored on the same bags in the same report; "
                             "MODEL@BACKEND picks a backend (e.g. model.onnx@onnxruntime)")
    parser.add_argument("--short-side", type=int, default=0,
                        help="dynamic-size models: short side of the model input in pixels, "
                             "as the depth node's input_short_side (default 0: as the model "
                             "was trained, see --focal-policy; 518 for models that do not "
                             "record it)")
    parser.add_argument("--focal-policy", choices=FOCAL_POLICIES, default="as_trained",
                        help="as_trained (default): resize so the input focal length in "
                             "pixels equals the training one; canonical: depth x "
                             "f_input / f_train (as the node's focal_policy)")
    parser.add_argument("--max-pixels", type=int, default=0,
                        help="dynamic-size models: cap on input pixels (0: none), as the "
                             "node's input_max_pixels")
    parser.add_argument("--name", default=None,
                        help="row name of --model / --prediction-topic in the report")
    parser.add_argument("--out", required=True, help="output folder for the report")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                        help="a paper's evaluation protocol: depth range, crop, median "
                             "scaling, prediction clamp and how LiDAR becomes the "
                             "reference, as its reference code does it (kitti-eigen: "
                             "monodepth2's Eigen split; md4all-nuscenes: md4all's nuScenes "
                             "evaluation). It fixes --gt, --min-depth, --max-depth, "
                             "--median-scaling and --align")
    parser.add_argument("--gt", default=None,
                        help="reference: 'lidar' (projected through TF, default) or a dense "
                             "depth topic such as /ground_truth/depth")
    parser.add_argument("--lidar-topic", default="/lidar/points")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--camera-info-topic", default="/camera/camera_info")
    parser.add_argument("--input-image", choices=INPUT_IMAGES, default="raw",
                        help="raw: images rectified with the CameraInfo's distortion "
                             "(as the depth node does); rectified: image_rect, described "
                             "by P; ignore_distortion: K on the raw image (comparison)")
    parser.add_argument("--min-depth", type=float, default=None,
                        help="smallest reference depth scored, metres (default 0.1)")
    parser.add_argument("--max-depth", type=float, default=None,
                        help="evaluation cap in metres (default 80: nuScenes protocol)")
    parser.add_argument("--median-scaling", action="store_true",
                        help="per-frame median scaling (relative models; '*' in the table)")
    parser.add_argument("--align", choices=["affine", "affine_disparity"], default=None,
                        help="least-squares alignment before scoring (affine-invariant models)")
    parser.add_argument("--condition", default=None,
                        help="override the bags' recorded condition")
    parser.add_argument("--max-frames", type=int, default=0,
                        help="score at most this many frames per bag (0: all)")
    parser.add_argument("--stride", type=int, default=1, help="score every Nth frame")
    prior = parser.add_mutually_exclusive_group()
    prior.add_argument("--prior-bags", nargs="+", default=[], metavar="B",
                       help="add the image-blind prior row (per-pixel median reference depth "
                            "over these bags, e.g. the training bags) and structure-pixel "
                            "abs_rel (where the prior is off by more than 20%%)")
    prior.add_argument("--prior", action="store_true",
                       help="as --prior-bags, leave-one-out over the evaluated bags")
    parser.add_argument("--temporal-fusion", action="store_true",
                        help="also score every model after the depth node's temporal fusion "
                             "(a '<model> + fusion' row, ego-motion from the bag's TF)")
    parser.add_argument("--fusion-threshold", type=float, default=0.1,
                        help="as the node's fusion_threshold (default 0.1)")
    parser.add_argument("--fusion-max-age", type=int, default=8,
                        help="as the node's fusion_max_age (default 8)")
    parser.add_argument("--no-plots", action="store_true", help="skip the png plots")


def run(args) -> int:
    from depth_perception.evaluation.offline import (EvaluateConfig, evaluate,
                                                     parse_model_spec)
    from depth_perception.evaluation.report import markdown_table, write_report

    protocol_settings = {"min_depth": args.min_depth, "max_depth": args.max_depth,
                         "median_scaling": args.median_scaling or None, "align": args.align,
                         "reference": args.gt}
    common = dict(
        condition=args.condition, max_frames=args.max_frames, stride=args.stride,
        lidar_topic=args.lidar_topic, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, input_image=args.input_image,
        prior="bags" if args.prior_bags else "loo" if args.prior else "none",
        prior_bags=tuple(args.prior_bags), temporal_fusion=args.temporal_fusion,
        fusion_threshold=args.fusion_threshold, fusion_max_age=args.fusion_max_age)
    if args.protocol:
        given = {k: v for k, v in protocol_settings.items() if v is not None}
        config = EvaluateConfig.for_protocol(args.protocol, **given, **common)
    else:
        defaults = {"min_depth": 0.1, "max_depth": 80.0, "median_scaling": False,
                    "reference": "lidar"}
        config = EvaluateConfig(**{k: v if v is not None else defaults.get(k)
                                   for k, v in protocol_settings.items()}, **common)
    options = {"short_side": args.short_side or None, "max_pixels": args.max_pixels or None,
               "focal_policy": args.focal_policy}
    models = []
    if args.model:
        models.append(parse_model_spec(args.model, args.backend, args.name, options))
    models += [parse_model_spec(m, args.backend, options=options) for m in args.compare]
    results = evaluate(args.bag, config, models=models,
                       prediction_topic=args.prediction_topic,
                       prediction_name=args.name)
    paths = write_report(results, args.out, plots=not args.no_plots)
    print(markdown_table(results))
    print(f"report: {paths['report']}")
    print(f"metrics: {paths['metrics']}")
    return 0
