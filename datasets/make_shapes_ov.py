#!/usr/bin/env python
"""Write Shapes-OV to disk in the user layout and COCO panoptic / instances format.

Example::

    python datasets/make_shapes_ov.py --out datasets/shapes_ov --train 1000 --val 100 --test 200

The result is read back by ``--dataset-root DIR`` (``mmmask.data.register_dataset_root``).
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=1000, help="train images (default 1000)")
    p.add_argument("--val", type=int, default=100, help="val images (default 100)")
    p.add_argument("--test", type=int, default=200, help="test images (default 200)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="Shapes-OV seed (default 0)")
    p.add_argument("--formats", default="user,coco",
                   help="comma-separated: user, coco (default both)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes (default: CPU count, at most 8)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmmask.data.export import write_shapes_dataset

    start = time.perf_counter()
    try:
        counts = write_shapes_dataset(
            args.out, {"train": args.train, "val": args.val, "test": args.test},
            size=args.size, seed=args.seed, formats=args.formats.split(","),
            workers=args.workers,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = sum(counts.values())
    print(f"wrote {total} images ({counts}) to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
