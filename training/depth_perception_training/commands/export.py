"""``depth-perception export``: checkpoint -> ONNX (+ TensorRT engine, + torch2trt).

Examples::

    depth-perception export --checkpoint runs/ssd/final --height 364 --width 644 \\
        --onnx models/depth_364x644.onnx --parity-bag bags/night_01
    depth-perception export --checkpoint runs/ssd/final --height 364 --width 644 \\
        --onnx models/depth_364x644.onnx --engine models/depth_364x644_int8.engine \\
        --precision int8 --calib-bag bags/day_01 bags/night_01 --calib-frames 300 \\
        --timing-cache models/timing.cache
    depth-perception export --checkpoint runs/tiny/final --height 192 --width 640 \\
        --onnx models/depth_192x640.onnx --quantize int8 --calib-bag bags/day_01 bags/night_01
        # also writes models/depth_192x640.int8.onnx (CPU INT8, onnxruntime QDQ)
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("export a depth model to ONNX (static size, checked), CPU INT8 ONNX, TensorRT / "
        "torch2trt")


def default_export_size(metadata, parity_bag, reader) -> tuple[int, int]:
    """(width, height) the runtime would run ``metadata``'s model at: for the parity bag's
    camera (focal policy as_trained, :func:`depth_perception.runtime.geometry.plan_input`),
    else the training size; printed with the reason."""
    from depth_perception.runtime.geometry import plan_input
    from depth_perception.runtime.processing import choose_input_size

    if parity_bag is not None:
        camera = reader.read(parity_bag, [0])[0][1]
        plan = plan_input(metadata, camera)
        size = choose_input_size(camera.width, camera.height, metadata.size_multiple,
                                 plan.short_side)
        print(f"export size {size[0]}x{size[1]} for the {camera.width}x{camera.height} camera "
              f"of {parity_bag}: {plan.reason}")
        return size
    if metadata.train_height:
        print(f"export size {metadata.train_width}x{metadata.train_height}: the training size")
        return metadata.train_width, metadata.train_height
    raise ValueError("this model records no training size: give --height and --width (or "
                     "--parity-bag, whose camera sets the size)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("source and ONNX")
    src.add_argument("--checkpoint", required=True,
                     help="checkpoint folder of this package (model_config.json, "
                          "depth_model.safetensors, metadata.json) or a transformers depth "
                          "model folder / model id in the local cache")
    src.add_argument("--height", type=int, default=None,
                     help="input height in pixels (multiple of 14); one ONNX per resolution. "
                          "Default (with --width unset too): what the runtime runs this model "
                          "at for the --parity-bag camera (focal length as trained), else the "
                          "checkpoint's training size")
    src.add_argument("--width", type=int, default=None,
                     help="input width in pixels (multiple of 14); see --height")
    src.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    src.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    src.add_argument("--dynamic-batch", action="store_true",
                     help="keep the batch dimension dynamic: a depth node serving several "
                          "cameras runs their frames in one onnxruntime call (checked: one "
                          "batch = one by one); not with the TensorRT or INT8 outputs, "
                          "which are built from batch-1 ONNX")
    src.add_argument("--device", default="cpu",
                     help="torch device for the export and parity check (default cpu)")
    src.add_argument("--parity-bag", type=Path, default=None,
                     help="bag whose frames (through the node's preprocessing) are used for "
                          "the torch vs onnxruntime check (default: synthetic frames)")
    src.add_argument("--parity-frames", type=int, default=4,
                     help="frames in the parity check (default 4)")
    src.add_argument("--tolerance", type=float, default=1e-3,
                     help="max relative error onnxruntime vs torch, max|diff| / max|torch| "
                          "over each frame (default 1e-3); above it nothing is written")
    src.add_argument("--image-topic", default=None,
                     help="image topic in the bags (default /camera/image_raw)")
    src.add_argument("--camera-info-topic", default=None,
                     help="CameraInfo topic in the bags (default /camera/camera_info)")

    from depth_perception.commands.quantize import add_options

    cpu = parser.add_argument_group("CPU INT8 ONNX (onnxruntime static QDQ, calibrated on "
                                    "--calib-bag)")
    cpu.add_argument("--quantize", choices=("int8",), default=None,
                     help="also write an INT8 copy of the ONNX model for CPU inference")
    cpu.add_argument("--quantized-onnx", type=Path, default=None,
                     help="INT8 output (default <onnx stem>.int8.onnx)")
    add_options(cpu)

    trt = parser.add_argument_group("TensorRT engine (needs TensorRT and a GPU)")
    out = trt.add_mutually_exclusive_group()
    out.add_argument("--engine", type=Path, default=None, help="output TensorRT engine file")
    out.add_argument("--engine-cache", type=Path, default=None,
                     help="instead of --engine: engine cache folder; the engine is named by "
                          "its cache key (GPU, TensorRT version, precision, shape, ONNX hash) "
                          "and only built when missing")
    trt.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                     help="engine precision (default fp16; LayerNorm/softmax/attention stay "
                          "fp32)")
    trt.add_argument("--calib-bag", type=Path, nargs="+", action="extend", default=[],
                     help="bags to sample INT8 calibration (and check) frames from "
                          "(TensorRT --precision int8 and --quantize int8)")
    trt.add_argument("--calib-frames", type=int, default=200,
                     help="calibration frames spread over the bags (default 200)")
    trt.add_argument("--calib-cache", type=Path, default=None,
                     help="INT8 calibration cache (default <engine>.calib; reused when present)")
    trt.add_argument("--workspace-gb", type=float, default=4.0,
                     help="builder workspace limit in GiB (default 4)")
    trt.add_argument("--timing-cache", type=Path, default=None,
                     help="TensorRT timing cache file (loaded if present, saved after build)")
    trt.add_argument("--engine-tolerance", type=float, default=None,
                     help="max relative error engine vs onnxruntime (default by precision: "
                          "fp32 1e-3, fp16 2e-2, int8 0.15)")
    trt.add_argument("--torch2trt", type=Path, default=None,
                     help="also convert with torch2trt and save its state dict here (.pth)")


def run(args) -> int:
    import dataclasses

    from depth_perception_training.export.onnx_export import check_export_size

    # 1. everything that can be checked before any heavy work
    if (args.height is None) != (args.width is None):
        raise ValueError("give both --height and --width, or neither (the runtime's default "
                         "size for this model)")
    if args.height is not None:
        check_export_size(args.height, args.width)
    elif args.engine_cache is not None:
        raise ValueError("--engine-cache names its files by size: give --height and --width")
    if args.dynamic_batch and (args.engine is not None or args.engine_cache is not None
                               or args.torch2trt is not None or args.quantize):
        raise ValueError("--dynamic-batch is for onnxruntime: TensorRT engines, torch2trt and "
                         "the INT8 copy are built from batch-1 ONNX; export those without it")
    if args.parity_bag is not None and not args.parity_bag.exists():
        raise FileNotFoundError(f"parity bag {args.parity_bag} not found")
    for bag in args.calib_bag:
        if not bag.exists():
            raise FileNotFoundError(f"calibration bag {bag} not found")
    calib_cache = None
    want_engine = args.engine is not None or args.engine_cache is not None
    if want_engine:
        from depth_perception.runtime.backends.tensorrt_backend import import_tensorrt

        import_tensorrt()
        calib_cache = args.calib_cache or (
            Path(str(args.engine) + ".calib") if args.engine is not None
            else args.engine_cache / f"{args.onnx.stem}.{args.height}x{args.width}.calib")
        if args.precision == "int8" and not args.calib_bag and not calib_cache.is_file():
            raise ValueError("--precision int8 needs calibration frames: --calib-bag BAG ... "
                             f"(or an existing calibration cache; none at {calib_cache})")
    elif args.calib_cache or (args.calib_bag and not args.quantize):
        raise ValueError("--calib-bag/--calib-cache only apply with --engine/--engine-cache "
                         "(--calib-bag also with --quantize int8)")
    if args.quantize and not args.calib_bag:
        raise ValueError("--quantize int8 is calibrated on your data: give --calib-bag BAG ...")
    if args.torch2trt is not None:
        from depth_perception_training.export.torch2trt_export import import_torch2trt

        import_torch2trt()

    from depth_perception.runtime.calibration import frames_from_bags, default_frame_reader
    from depth_perception_training.export.onnx_export import export_onnx, load_export_source
    from depth_perception.runtime.processing import Preprocessor

    reader = default_frame_reader(args.image_topic, args.camera_info_topic)

    # 2. source model
    source = load_export_source(args.checkpoint, device=args.device)
    if args.height is None:
        args.width, args.height = default_export_size(source.metadata, args.parity_bag, reader)
    fixed = dataclasses.replace(source.metadata, input_height=args.height,
                                input_width=args.width)

    # 3. ONNX with parity check
    parity = None
    if args.parity_bag is not None:
        parity = frames_from_bags([args.parity_bag], fixed, args.parity_frames,
                                  Preprocessor(fixed), reader)
    result = export_onnx(source, args.onnx, args.height, args.width, opset=args.opset,
                         parity_frames=parity,
                         parity_source=f"bag {args.parity_bag}" if parity is not None
                         else "synthetic", tolerance=args.tolerance,
                         dynamic_batch=args.dynamic_batch)
    size_mb = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({args.height}x{args.width}, {size_mb:.1f} MB, "
          f"{result.metadata.output_kind}) in {result.seconds:.1f} s; onnxruntime vs torch "
          f"max relative error {result.max_rel_error:.2e} on {result.parity_frames} frames")

    # 4. CPU INT8 copy, checked against the FP32 model on the calibration frames
    if args.quantize:
        from depth_perception.commands.quantize import (config_from_args, default_int8_path,
                                                        quantize_from_bags)

        quantize_from_bags(result.path, args.quantized_onnx or default_int8_path(result.path),
                           args.calib_bag, args.calib_frames, config_from_args(args),
                           args.image_topic, args.camera_info_topic)

    # 5. TensorRT engine
    if want_engine:
        from depth_perception.runtime.calibration import CalibrationConfig, CalibrationSource
        from depth_perception.runtime.engine import (EngineBuildConfig, build_engine,
                                                            ensure_engine, layers_from_onnx,
                                                            select_fp32_layers,
                                                            trtexec_command)

        calibration = None
        if args.calib_bag or args.precision == "int8":
            calibration = CalibrationSource(result.metadata, calib_cache, args.calib_bag,
                                            CalibrationConfig(args.calib_frames),
                                            Preprocessor(result.metadata), reader)
        config = EngineBuildConfig(precision=args.precision, workspace_gb=args.workspace_gb,
                                   timing_cache=args.timing_cache,
                                   tolerance=args.engine_tolerance)
        if args.engine is not None:
            engine = build_engine(result.path, args.engine, config, calibration=calibration,
                                  metadata=result.metadata)
            print(f"wrote {engine} ({args.precision}) and {engine}.json")
        else:
            done = ensure_engine(result.path, args.precision, args.engine_cache, config=config,
                                 calibration=calibration, return_result=True)
            engine = done.engine_path
            print(f"{'built' if done.built else 'reused cached'} engine {engine} "
                  f"({args.precision})")
        fp32 = select_fp32_layers(layers_from_onnx(result.path))
        print("equivalent trtexec command: " + trtexec_command(
            result.path, engine, args.precision, args.workspace_gb, args.timing_cache,
            calib_cache if args.precision == "int8" else None, fp32))

    # 6. torch2trt
    if args.torch2trt is not None:
        from depth_perception.runtime.calibration import synthetic_frames
        from depth_perception_training.export.torch2trt_export import export_torch2trt

        precision = "fp16" if args.precision in ("fp16", "int8") else "fp32"
        path = export_torch2trt(source.module, result.metadata, args.torch2trt,
                                precision=precision, workspace_gb=args.workspace_gb,
                                check_frames=synthetic_frames(result.metadata, 2))
        print(f"wrote {path} (torch2trt, {precision}) and {path}.json")
    return 0
