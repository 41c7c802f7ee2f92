"""``depth-perception import kitti|nuscenes``: public datasets to rosbag2, one bag per
drive / scene, in the package's topics (what ``evaluate`` and training read)."""
from __future__ import annotations

HELP = ("import KITTI raw drives (pykitti) or nuScenes scenes (nuscenes-devkit) into rosbag2 "
        "folders: camera, CameraInfo, LiDAR, TF, odometry, condition")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True
    kitti = sub.add_parser("kitti", help="KITTI raw drives of a monodepth2 split")
    kitti.add_argument("--basedir", required=True,
                       help="KITTI raw root: <basedir>/<date>/<date>_drive_NNNN_sync")
    kitti.add_argument("--split", required=True, choices=["eigen", "eigen_zhou",
                                                          "eigen_benchmark"])
    kitti.add_argument("--part", default=None, choices=["test", "train", "val"],
                       help="part of the split (default: test for eigen and "
                            "eigen_benchmark, train for eigen_zhou)")
    kitti.add_argument("--context", type=int, default=None,
                       help="neighbour frames imported on each side of every listed frame "
                            "(default: 1 for eigen_zhou, for self-supervised training; 0 else)")
    kitti.add_argument("--drive", action="append", default=None, metavar="FOLDER",
                       help="only this drive folder, e.g. 2011_09_26/2011_09_26_drive_0002_sync "
                            "(repeatable)")
    kitti.add_argument("--image-format", choices=["png", "jpeg", "raw"], default="png",
                       help="png: the recorded file (CompressedImage, default); jpeg; raw rgb8")
    nusc = sub.add_parser("nuscenes", help="nuScenes scenes, CAM_FRONT + LIDAR_TOP")
    nusc.add_argument("--dataroot", required=True, help="folder holding v1.0-*/, samples/, sweeps/")
    nusc.add_argument("--version", required=True,
                      choices=["v1.0-mini", "v1.0-trainval", "v1.0-test"])
    nusc.add_argument("--split", default="all",
                      help="md4all-train, md4all-val, md4all-test, train, val, test, mini_train, "
                           "mini_val or all (default)")
    nusc.add_argument("--scene", action="append", default=None, metavar="NAME",
                      help="only this scene, e.g. scene-0061 (repeatable)")
    nusc.add_argument("--sweeps", action="store_true",
                      help="CAM_FRONT sweeps too (12 Hz), not only keyframes (2 Hz)")
    nusc.add_argument("--image-format", choices=["jpeg", "png", "raw"], default="jpeg",
                      help="jpeg: the recorded file (CompressedImage, default); png; raw rgb8")
    for p in (kitti, nusc):
        p.add_argument("--out", required=True, help="output folder of the bags")
        p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
        p.add_argument("--overwrite", action="store_true",
                       help="replace existing bags of the same names")


def _progress(k, n, name, frames, seconds) -> None:
    print(f"[{k}/{n}] {name}: {frames} frames in {seconds:.1f} s "
          f"({frames / max(seconds, 1e-9):.1f} frames/s)", flush=True)


def run(args) -> int:
    if args.dataset == "kitti":
        from depth_perception.datasets.kitti import import_kitti

        context = args.context if args.context is not None else (
            1 if args.split == "eigen_zhou" else 0)
        bags = import_kitti(args.basedir, args.split, args.out, part=args.part,
                            context=context, storage=args.storage,
                            image_format=args.image_format, overwrite=args.overwrite,
                            drives=args.drive, progress=_progress)
    else:
        from depth_perception.datasets.nuscenes import import_nuscenes

        bags = import_nuscenes(args.dataroot, args.version, args.out, split=args.split,
                               scenes=args.scene, sweeps=args.sweeps, storage=args.storage,
                               image_format=args.image_format, overwrite=args.overwrite,
                               progress=_progress)
    print(f"wrote {len(bags)} bags to {args.out}")
    return 0
