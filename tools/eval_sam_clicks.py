#!/usr/bin/env python
"""Interactive SAM quality on Shapes-OV: mIoU of the masks after 1 and 3 simulated clicks, and
(``--automatic N``) the automatic generator's masks per image, recall and precision at IoU 0.5 on
the first N images with the config's thresholds.

    python tools/eval_sam_clicks.py [--config-file F] [--checkpoint C] [--dataset shapes_ov_val]
    python tools/eval_sam_clicks.py --max-images 0 --automatic 12 [KEY VALUE ...]
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
    p.add_argument("--automatic", type=int, default=0, metavar="N",
                   help="also measure automatic mode on the first N images")
    p.add_argument("--output", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    from mmmask.cli import run_guarded

    def run() -> int:
        from mmmask.evaluation.runner import report
        import itertools

        from mmmask.config import load_cfg
        from mmmask.data.loader import build_test_loader
        from mmmask.modeling.mask_generators.sam_build import build_sam_model, sam_kwargs_from_cfg
        from mmmask.modeling.mask_generators.sam_train import evaluate_automatic, evaluate_clicks
        from mmmask.predictor import default_config_file

        opts = ["MODEL.SAM.CHECKPOINT", args.checkpoint] if args.checkpoint else []
        cfg = load_cfg(args.config_file or default_config_file(), opts + list(args.opts))
        sam = build_sam_model(**sam_kwargs_from_cfg(cfg))
        loader = build_test_loader(cfg, args.dataset)
        samples = (b[0] for b in itertools.islice(loader, args.max_images))
        result = {}
        if args.max_images > 0:
            result = {f"mIoU_{k}_click{'s' if k > 1 else ''}": v for k, v in
                      evaluate_clicks(sam, samples, clicks=(1, 3)).items() if k != "num_masks"}
        if args.automatic > 0:
            from mmmask.registry import MASK_GENERATOR_REGISTRY

            generator = MASK_GENERATOR_REGISTRY.get("SAM")(cfg).eval()
            first = (b[0] for b in itertools.islice(build_test_loader(cfg, args.dataset),
                                                    args.automatic))
            result.update({f"automatic_{k}": v for k, v in
                           evaluate_automatic(generator.generate, first).items()})
        return report(result, args.output)

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
