"""``depth-perception quantize``: FP32 ONNX -> INT8 (QDQ) ONNX for CPUs, calibrated on bags.

Example::

    depth-perception quantize --onnx models/depth_192x640.onnx \\
        --calib-bag bags/day_01 bags/night_01 --calib-frames 100

writes ``models/depth_192x640.int8.onnx`` (``--out`` to choose), after checking its
depth against the FP32 model on the calibration frames. ``depth-perception export
... --quantize int8`` does the same right after exporting.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "quantise an exported ONNX model to INT8 (onnxruntime static QDQ) for CPU inference"


def add_options(group) -> None:
    """The quantisation options shared with ``depth-perception export --quantize``."""
    from depth_perception.runtime.quantize import CALIBRATION_METHODS, DEFAULT_OP_TYPES

    group.add_argument("--quantize-op-types", default=None,
                       help="comma-separated op types to quantise, or 'all' (default "
                            f"{','.join(DEFAULT_OP_TYPES)}: measured fastest on this CPU "
                            "class at equal accuracy)")
    group.add_argument("--quantize-exclude", default="",
                       help="comma-separated op types not to quantise")
    group.add_argument("--calibrate-method", choices=CALIBRATION_METHODS, default="minmax",
                       help="activation ranges from (default) min/max, entropy or percentile")
    group.add_argument("--quantize-output-layer", action="store_true",
                       help="also quantise the layer that produces the output (default: it "
                            "stays FP32; its int8 steps would be depth errors)")
    group.add_argument("--quantize-tolerance", type=float, default=0.05,
                       help="largest accepted abs_rel of INT8 depth against FP32 depth on "
                            "the calibration frames (default 0.05); above it nothing is "
                            "written")


def config_from_args(args):
    from depth_perception.runtime.quantize import QuantizeConfig

    def split(text):
        return tuple(t.strip() for t in (text or "").split(",") if t.strip())

    return QuantizeConfig(op_types=split(args.quantize_op_types) or None,
                          exclude_op_types=split(args.quantize_exclude),
                          calibrate_method=args.calibrate_method,
                          tolerance=args.quantize_tolerance,
                          keep_output_layer=not args.quantize_output_layer)


def default_int8_path(onnx_path: Path) -> Path:
    """``m.onnx`` -> ``m.int8.onnx``."""
    return onnx_path.with_name(onnx_path.stem + ".int8.onnx")


def quantize_from_bags(fp32: Path, out: Path, bags, n_frames: int, config,
                       image_topic=None, camera_info_topic=None):
    """Calibration frames from ``bags`` (node preprocessing) -> INT8 model; prints a summary."""
    from depth_perception.runtime.calibration import default_frame_reader, frames_from_bags
    from depth_perception.runtime.onnx_metadata import read_onnx_metadata
    from depth_perception.runtime.processing import Preprocessor
    from depth_perception.runtime.quantize import quantize_onnx

    if not bags:
        raise ValueError("INT8 quantisation is calibrated on your data: give --calib-bag "
                         "BAG ... (frames are spread over the bags)")
    metadata = read_onnx_metadata(fp32)
    frames = frames_from_bags(bags, metadata, n_frames, Preprocessor(metadata),
                              default_frame_reader(image_topic, camera_info_topic))
    result = quantize_onnx(fp32, out, frames, config, calibration_source={
        "bags": [str(Path(b).resolve()) for b in bags], "requested_frames": int(n_frames)})
    ops = ", ".join(f"{op} x{n}" for op, n in result.quantized_ops.items())
    print(f"wrote {result.path} (int8 QDQ: {ops}) in {result.seconds:.1f} s; depth vs FP32 "
          f"on {result.check_frames} calibration frames: abs_rel {result.abs_rel:.4f}, max "
          f"relative output error {result.max_rel_error:.3f}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", type=Path, required=True,
                        help="FP32 .onnx with package metadata (from depth-perception export)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output INT8 .onnx (default: <onnx stem>.int8.onnx)")
    parser.add_argument("--calib-bag", type=Path, nargs="+", action="extend", default=[],
                        required=True, help="bags to sample calibration frames from")
    parser.add_argument("--calib-frames", type=int, default=100,
                        help="calibration frames spread over the bags (default 100)")
    parser.add_argument("--image-topic", default=None,
                        help="image topic in the bags (default /camera/image_raw)")
    parser.add_argument("--camera-info-topic", default=None,
                        help="CameraInfo topic in the bags (default /camera/camera_info)")
    add_options(parser.add_argument_group("quantisation"))


def run(args) -> int:
    if not args.onnx.is_file():
        raise FileNotFoundError(f"ONNX model {args.onnx} not found")
    quantize_from_bags(args.onnx, args.out or default_int8_path(args.onnx), args.calib_bag,
                       args.calib_frames, config_from_args(args), args.image_topic,
                       args.camera_info_topic)
    return 0
