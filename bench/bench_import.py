"""Import throughput and peak memory of ``depth-perception import kitti|nuscenes``.

    .venv/bin/python bench/bench_import.py [--frames 23] [--scenes 3] [--full-size]

Writes a tiny dataset in each real layout (:mod:`depth_perception.datasets.tiny`,
:mod:`depth_perception.datasets.tiny_nuscenes`), then imports it in a fresh process
(spawned, so ``ru_maxrss`` is that import's peak) and prints frames per second and the
peak resident memory. ``--full-size`` uses the datasets' image sizes and LiDAR point
counts (KITTI 1242x375, 120k points per scan; nuScenes 1600x900, 34k points), the
numbers to extrapolate to whole datasets from. Results go to bench/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path


def _import(kind: str, root: str, queue) -> None:
    """(frames, seconds writing drives/scenes, seconds in all, peak MiB) of one import."""
    tic = time.perf_counter()
    per_bag = []
    progress = lambda k, n, name, frames, seconds: per_bag.append((frames, seconds))  # noqa: E731
    if kind == "kitti":
        from depth_perception.datasets.kitti import import_kitti

        import_kitti(Path(root) / "raw", "eigen", Path(root) / "bags", progress=progress)
    else:
        from depth_perception.datasets.nuscenes import import_nuscenes

        import_nuscenes(Path(root) / "data", "v1.0-mini", Path(root) / "bags",
                        progress=progress)
    queue.put((sum(f for f, _ in per_bag), sum(s for _, s in per_bag),
               time.perf_counter() - tic,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def _run(kind: str, root: str) -> tuple:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_import, args=(kind, root, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _baseline() -> float:
    """Peak memory of a spawned process that only imports the package (MiB)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_package_only)


def _package_only() -> float:
    import depth_perception.datasets.kitti  # noqa: F401
    import depth_perception.datasets.nuscenes  # noqa: F401
    import rosbags.rosbag2  # noqa: F401

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _report(label: str, frames: int, writing: float, total: float, peak: float) -> None:
    print(f"{label}: {frames} frames, {frames / writing:.1f} frames/s writing bags "
          f"({writing:.2f} s; {total:.2f} s with the devkit's start-up), peak {peak:.0f} MiB")


def main() -> None:
    from depth_perception.datasets import tiny, tiny_nuscenes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=23, help="KITTI drive frames (>= 23)")
    parser.add_argument("--scenes", type=int, default=3, help="nuScenes scenes")
    parser.add_argument("--full-size", action="store_true",
                        help="the datasets' image sizes and LiDAR point counts")
    args = parser.parse_args()
    kitti_size, kitti_points = ((1242, 375), 120_000) if args.full_size else ((160, 48), 400)
    nusc_size, nusc_points = ((1600, 900), 34_000) if args.full_size else ((160, 90), 400)
    print(f"package import alone: peak {_baseline():.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        tiny.write_kitti_drive(Path(tmp) / "raw", frames=args.frames, size=kitti_size,
                               points=kitti_points)
        _report(f"kitti {kitti_size[0]}x{kitti_size[1]}, {kitti_points} points/scan",
                *_run("kitti", tmp))
    with tempfile.TemporaryDirectory() as tmp:
        tiny_nuscenes.write_nuscenes(Path(tmp) / "data", ["day"] * args.scenes,
                                     size=nusc_size, points=nusc_points)
        _report(f"nuscenes {nusc_size[0]}x{nusc_size[1]}, {nusc_points} points/scan",
                *_run("nuscenes", tmp))


if __name__ == "__main__":
    main()
