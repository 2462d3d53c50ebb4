#!/usr/bin/env python
"""Evaluate a segmentation model on a dataset: prints a table and writes the metrics as JSON.

    python tools/eval.py --dataset shapes_ov_test --task semantic --output metrics.json
    python tools/eval.py --config-file F --weights W --dataset-root DIR [--vocab-file F]
    python tools/eval.py --dataset shapes_ov_val --oracle-names   # the masks' own bound

Config and weights default to the shipped Shapes-OV model; trailing KEY VALUE pairs override
config keys.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=None, help="default: the shipped Shapes-OV model")
    p.add_argument("--weights", default=None, help="overrides MODEL.WEIGHTS")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset", help="a registered dataset name (e.g. shapes_ov_test)")
    data.add_argument("--dataset-root", help="a dataset folder in the user layout or COCO format")
    p.add_argument("--vocab-file", default=None, help="class names (one per dataset class)")
    p.add_argument("--task", default=None, choices=["semantic", "panoptic", "instance"])
    p.add_argument("--generator", default="pmp", choices=["pmp", "sam"],
                   help="mask generator: the model's own (pmp) or SAM automatic masks")
    p.add_argument("--oracle-names", action="store_true",
                   help="name each predicted mask with the ground-truth class most of its pixels "
                        "carry: bounds what better naming alone could reach with these masks")
    p.add_argument("--output", default=None, help="write the metrics JSON here")
    p.add_argument("--device", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.oracle_names and args.generator != "pmp":
        print("--oracle-names names the model's own masks; it cannot be used with --generator "
              f"{args.generator}.", file=sys.stderr)
        return 2
    from mmmask.cli import run_guarded
    from mmmask.evaluation.runner import evaluate_dataset
    from mmmask.predictor import SegmentationPredictor

    def run() -> int:
        predictor = SegmentationPredictor.from_files(args.config_file, args.weights, args.opts,
                                                     args.device)
        model = predictor.as_model(args.generator)
        if args.oracle_names:
            from mmmask.evaluation.oracle import OracleNamedSegmentor

            model = OracleNamedSegmentor(model)
        evaluate_dataset(predictor.cfg, model, args.dataset or args.dataset_root, task=args.task,
                         vocab=args.vocab_file, output=args.output)
        return 0

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
