#!/usr/bin/env python
"""How well a segmenter's mask classifier names ground-truth Shapes-OV segments (its accuracy
with perfect masks), e.g. Mask-Adapter vs plain mask pooling on the same CLIP.

    python tools/eval_mask_naming.py [--config-file F --weights W] [--num-images 100] \\
        [--output F.json] [KEY VALUE ...]
    python tools/eval_mask_naming.py MODEL.MASK_CLASSIFIER.NAME MaskPooling   # the baseline
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=None, help="default: the shipped segmenter")
    p.add_argument("--weights", default=None)
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--output", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    from mmmask.cli import run_guarded

    def run() -> int:
        from mmmask.evaluation.runner import report
        from mmmask.evaluation.zeroshot import shapes_mask_naming
        from mmmask.predictor import SegmentationPredictor

        pred = SegmentationPredictor.from_files(args.config_file, args.weights, args.opts)
        size = int(pred.cfg.DATASETS.SHAPES.IMAGE_SIZE)
        result = shapes_mask_naming(pred, args.num_images, args.split,
                                    seed=int(pred.cfg.DATASETS.SHAPES.SEED), size=size)
        return report(result, args.output)

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
