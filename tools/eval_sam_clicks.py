#!/usr/bin/env python
"""Interactive SAM quality on Shapes-OV: mIoU of the masks after 1 and 3 simulated clicks.

    python tools/eval_sam_clicks.py [--config-file F] [--checkpoint C] [--dataset shapes_ov_val]
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=None, help="default: the shipped segmenter config")
    p.add_argument("--checkpoint", default=None, help="overrides MODEL.SAM.CHECKPOINT")
    p.add_argument("--dataset", default="shapes_ov_val")
    p.add_argument("--max-images", type=int, default=200)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    from mmmask.cli import run_guarded

    def run() -> int:
        from mmmask.evaluation.runner import report
        import itertools

        from mmmask.config import load_cfg
        from mmmask.data.loader import build_test_loader
        from mmmask.modeling.mask_generators.sam_build import build_sam_model, sam_kwargs_from_cfg
        from mmmask.modeling.mask_generators.sam_train import evaluate_clicks
        from mmmask.predictor import default_config_file

        opts = ["MODEL.SAM.CHECKPOINT", args.checkpoint] if args.checkpoint else []
        cfg = load_cfg(args.config_file or default_config_file(), opts)
        sam = build_sam_model(**sam_kwargs_from_cfg(cfg))
        loader = build_test_loader(cfg, args.dataset)
        samples = (b[0] for b in itertools.islice(loader, args.max_images))
        result = {f"mIoU_{k}_click{'s' if k > 1 else ''}": v for k, v in
                  evaluate_clicks(sam, samples, clicks=(1, 3)).items() if k != "num_masks"}
        return report(result, args.output)

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
