#!/usr/bin/env python
"""Package a trained model as a shipped model: mmmask/weights/NAME.safetensors (float16) + NAME.yaml.

    python tools/export_weights.py --config-file configs/shapes/crop_tower.yaml \
        --weights output/shapes/crop_tower/model_final.safetensors --name shapes_ovseg \
        --embedding-rows-from output/shapes/clip/model_final.pth \
            output/shapes/clip_regions/model_final.pth \
        MODEL.MASK_CROP.TRAIN False MODEL.SAM.CHECKPOINT shipped:shapes_sam.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="trained weights (safetensors or state dict)")
    p.add_argument("--name", required=True, help="file stem inside mmmask/weights/")
    p.add_argument("--out-dir", default=None, help="default: the package's weights folder")
    p.add_argument("--embedding-rows-from", default=None, nargs="+",
                   help="CLIP pretraining checkpoint(s) (.pth) whose optimizer states tell which "
                        "token-embedding rows were trained, or a shipped file (e.g. "
                        "shipped:shapes_ovseg.safetensors) whose stored rows to keep; only "
                        "those rows are stored")
    from mmmask.cli import run_guarded, split_opts

    argv, opts = split_opts(sys.argv[1:] if argv is None else list(argv))
    p.epilog = "Trailing KEY VALUE pairs override keys of the shipped config."
    args = p.parse_args(argv)
    args.opts = opts

    def run() -> int:
        from mmmask.config import load_cfg
        from mmmask.utils.ship import export_shipped

        cfg = load_cfg(args.config_file, args.opts, freeze=False)
        w, y = export_shipped(cfg, args.weights, args.name, args.out_dir, args.embedding_rows_from)
        print(f"wrote {w} ({os.path.getsize(w) / 2**20:.2f} MiB) and {y}")
        return 0

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
