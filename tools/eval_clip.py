#!/usr/bin/env python
"""Zero-shot accuracy of a CLIP on held-out Shapes-OV objects (seen / unseen classes).

    python tools/eval_clip.py --weights output/shapes/clip/model_final.safetensors [--output F.json]
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mmmask-shapes-convnext", help="open_clip model name")
    p.add_argument("--weights", default="", help="CLIP weights (tag or local file)")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--kind", default="crop", choices=("crop", "region"),
                   help="object crops, or objects cut from scenes (neighbours, occluders)")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    from mmmask.cli import run_guarded

    def run() -> int:
        from mmmask.evaluation.zeroshot import shapes_zero_shot
        from mmmask.modeling.clip import CLIPBackbone

        backbone = CLIPBackbone(model_name=args.model, pretrained=args.weights).eval()
        result = shapes_zero_shot(backbone, num_images=args.num_images, kind=args.kind)
        for k, v in result.items():
            print(f"{k:>16}: {v:.1f}" if isinstance(v, float) else f"{k:>16}: {v}")
        if args.output:
            from mmmask.evaluation.runner import write_json

            write_json(args.output, result)
        return 0

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
