#!/usr/bin/env python
"""How much of an object's shape a VQ tokenizer keeps: a small conv probe trained on the codes of
Shapes-OV images names their objects' shapes (8 shapes, chance 12.5 %).

    python tools/probe_vq_shapes.py                      # the shipped CM3's tokenizer (8x8 codes)
    python tools/probe_vq_shapes.py --kind scene         # the objects of scenes, told where
    python tools/probe_vq_shapes.py --config-file configs/shapes/vq.yaml \\
        --weights output/shapes/vq_f4/model_final.safetensors CM3.VQ.DOWNSAMPLE 4
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=None,
                   help="a VQ tokenizer config (default: the shipped CM3 model's tokenizer)")
    p.add_argument("--weights", default=None, help="that tokenizer's weights")
    p.add_argument("--num-train", type=int, default=8000)
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--kind", choices=("crop", "scene"), default="crop",
                   help="crop: one large object per image; scene: every object of a scene, "
                        "its mask on the token grid given to the probe")
    p.add_argument("--output", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    from mmmask.cli import run_guarded

    def run() -> int:
        from mmmask.evaluation.cm3_eval import vq_shape_probe
        from mmmask.evaluation.runner import report

        if args.config_file is None:
            if args.weights or args.opts:
                raise ValueError("--weights and overrides need --config-file (a VQ config)")
            from mmmask.cm3.api import CM3Generator

            vq = CM3Generator.from_files().vq
        else:
            from mmmask.config import load_cfg
            from mmmask.modeling import build_model
            from mmmask.utils.weights import load_matching, load_state_dict_file

            cfg = load_cfg(args.config_file, args.opts)
            if not args.weights:
                raise ValueError("--config-file needs --weights (the tokenizer's trained weights)")
            vq = build_model(cfg)
            load_matching(vq, load_state_dict_file(args.weights, "--weights"), args.weights)
        vq.eval()
        result = vq_shape_probe(vq.encode, args.num_train, args.num_test, args.epochs,
                                size=vq.image_size, num_codes=vq.codebook_size, kind=args.kind)
        return report(result, args.output)

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
