#!/usr/bin/env python
"""Held-out CM3 numbers on Shapes-OV: VQ PSNR and codebook usage, caption attribute accuracy and
text-to-image accuracy judged by the segmenter, and image infilling with both-sided vs left-only
context.

    python tools/eval_cm3.py [--config-file F --weights W] [--output F.json]
    python tools/eval_cm3.py --infill-only --weights output/shapes/cm3_causal/model_final.safetensors
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=None, help="default: the shipped CM3 model")
    p.add_argument("--weights", default=None)
    p.add_argument("--seg-config-file", default=None, help="default: the shipped segmenter")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--num-generated", type=int, default=32)
    p.add_argument("--no-judge", action="store_true", help="skip the segmenter-judged figure")
    p.add_argument("--infill-only", action="store_true",
                   help="only the infilling figures (e.g. to compare with a causal-only model)")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    from mmmask.cli import run_guarded

    def run() -> int:
        from mmmask.evaluation.runner import report
        from mmmask.cm3.api import CM3Generator
        from mmmask.evaluation.cm3_eval import evaluate_cm3, evaluate_infilling
        from mmmask.predictor import SegmentationPredictor

        gen = CM3Generator.from_files(args.config_file, args.weights)
        result = {}
        if not args.infill_only:
            seg = None if args.no_judge else SegmentationPredictor.from_files(args.seg_config_file)
            result = evaluate_cm3(gen, seg, args.num_images, args.num_generated)
        try:
            result.update(evaluate_infilling(gen, args.num_images))
        except Exception:
            if result:  # keep the figures measured so far, then fail with the error
                report(result, args.output)
            raise
        return report(result, args.output)

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
