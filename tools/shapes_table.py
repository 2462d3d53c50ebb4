#!/usr/bin/env python
"""The README's Shapes-OV results table: every generator/classifier pair through tools/eval.py.

    python tools/shapes_table.py --output docs/shapes_results.json

Each row is one `tools/eval.py` run per task on the Shapes-OV test split (seen and unseen classes
reported separately); rows whose weights are missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# (row name, config file, weights, generator, extra KEY VALUE overrides)
NO_CROP = ["MODEL.MASK_CROP.FUSION_WEIGHT", "0.0"]
# The rows up to the shipped one name the generator's masks as it predicts them (1/4 resolution),
# with the ensemble weight picked for them (0.5); the shipped model refines them first
# (MODEL.TEST.MASK_REFINE), and with refined masks trusts CLIP more on the seen classes (0.8).
NO_REFINE = ["MODEL.TEST.MASK_REFINE.ENABLED", "False", "MODEL.ENSEMBLE.ALPHA", "0.5"]
ROWS = [
    ("plain decoder + mask pooling", "configs/shapes/plain_decoder.yaml",
     "output/shapes/plain_decoder/model_final.safetensors", "pmp",
     ["MODEL.MASK_CLASSIFIER.NAME", "MaskPooling", "MODEL.TEST.LEFTOVER_REGIONS", "2"]),
    ("PMP + mask pooling", "mmmask/weights/shapes_ovseg.yaml", "", "pmp",
     ["MODEL.MASK_CLASSIFIER.NAME", "MaskPooling", "MODEL.ENSEMBLE.ENABLED", "False"] + NO_CROP
     + NO_REFINE),
    ("PMP + Mask-Adapter", "mmmask/weights/shapes_ovseg.yaml", "", "pmp",
     ["MODEL.ENSEMBLE.ENABLED", "False"] + NO_CROP + NO_REFINE),
    ("PMP + Mask-Adapter + in/out-vocabulary ensemble", "mmmask/weights/shapes_ovseg.yaml", "",
     "pmp", ["MODEL.ENSEMBLE.ENABLED", "True", "MODEL.ENSEMBLE.TASKS",
             '("semantic", "panoptic", "instance")'] + NO_CROP + NO_REFINE),
    ("SAM + Mask-Adapter", "mmmask/weights/shapes_ovseg.yaml", "", "sam", NO_CROP),
    ("PMP + mask crops (crop-and-classify, frozen CLIP)", "mmmask/weights/shapes_ovseg.yaml", "",
     "pmp", ["MODEL.MASK_CLASSIFIER.NAME", "MaskCrop", "MODEL.ENSEMBLE.ENABLED", "False",
      "MODEL.MASK_CROP.OWN_TOWER", "False", "MODEL.MASK_CROP.OWN_TEXT_TOWER", "False",
      "MODEL.MASK_CROP.CROP_SIZE", "0"] + NO_CROP + NO_REFINE),
    ("PMP + mask-adapted crops (image and text towers trained on the seen classes)",
     "mmmask/weights/shapes_ovseg.yaml", "", "pmp",
     ["MODEL.ENSEMBLE.ENABLED", "False", "MODEL.MASK_CROP.FUSION_WEIGHT", "1.0"] + NO_REFINE),
    ("PMP + Mask-Adapter x mask-adapted crops + ensemble, no leftover regions",
     "mmmask/weights/shapes_ovseg.yaml", "", "pmp", ["MODEL.TEST.LEFTOVER_REGIONS", "0"]
     + NO_REFINE),
    ("PMP + Mask-Adapter x mask-adapted crops + ensemble + leftover regions",
     "mmmask/weights/shapes_ovseg.yaml", "", "pmp", NO_REFINE),
    ("... + masks refined with the image before naming (guided filter; shipped)",
     "mmmask/weights/shapes_ovseg.yaml", "", "pmp", []),
    ("SAM + Mask-Adapter x mask-adapted crops (shipped)", "mmmask/weights/shapes_ovseg.yaml", "",
     "sam", []),
    # row 9 with the plain query decoder in PMP's place: stage 1 and step 5 of the recipe without
    # text cross-attention; only its generator is loaded over the shipped classifiers (README)
    ("... with the plain query decoder as the generator (same naming weights)",
     "mmmask/weights/shapes_ovseg.yaml", "", "pmp",
     ["MODEL.PMP.TEXT_CROSS_ATTN", "False",
      "MODEL.GENERATOR_WEIGHTS", "output/shapes/plain_more/model_final.safetensors"]),
]
TASKS = {"semantic": ["mIoU_seen", "mIoU_unseen", "hIoU", "mIoU"], "panoptic": ["PQ", "PQ_seen",
         "PQ_unseen"], "instance": ["AP", "AP_seen", "AP_unseen"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="shapes_ov_test")
    p.add_argument("--output", default=None)
    p.add_argument("--rows", default=None, help="comma-separated row numbers (default: all)")
    p.add_argument("--tasks", default="semantic,panoptic,instance")
    p.add_argument("--num-threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; use 1 when other jobs share the "
                   "cores, oversubscription makes rows many times slower)")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every row "
                   "(e.g. DATASETS.SHAPES.VAL_SIZE 50)")
    args = p.parse_args(argv)
    if args.num_threads > 0:
        import torch

        torch.set_num_threads(args.num_threads)
    from mmmask.evaluation.runner import evaluate_dataset
    from mmmask.predictor import SegmentationPredictor

    wanted = None if args.rows is None else {int(r) for r in args.rows.split(",")}
    results = {}
    for i, (name, config, weights, generator, opts) in enumerate(ROWS):
        if wanted is not None and i not in wanted:
            continue
        path = os.path.join(ROOT, weights) if weights else ""
        opts = list(opts)
        needed = [weights] if weights else []
        for j in range(0, len(opts), 2):
            if opts[j] == "MODEL.GENERATOR_WEIGHTS":  # another run's file, relative to the repo
                needed.append(opts[j + 1])
                opts[j + 1] = os.path.join(ROOT, opts[j + 1])
        missing = [f for f in needed if not os.path.isfile(os.path.join(ROOT, f))]
        if missing:
            print(f"skip {name!r}: {missing[0]} not found (train it first)")
            continue
        predictor = SegmentationPredictor.from_files(os.path.join(ROOT, config), path or None,
                                                     opts + list(args.opts))
        model = predictor.as_model(generator, cache_masks=True)  # SAM runs once per image
        row = {}
        for task in args.tasks.split(","):
            metrics = evaluate_dataset(predictor.cfg, model, args.dataset, task=task, show=False)
            row.update({k: metrics.get(k) for k in TASKS[task]})
        results[name] = row
        print(name, json.dumps({k: None if v is None else round(v, 1) for k, v in row.items()}),
              flush=True)
    cols = [c for t in args.tasks.split(",") for c in TASKS[t]]
    print("\n| method | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in results.items():
        cells = ["-" if row.get(c) is None else f"{row[c]:.1f}" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
