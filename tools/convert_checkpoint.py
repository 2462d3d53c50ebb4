"""Convert an official FC-CLIP / Mask-Adapter checkpoint into mmmask weights (safetensors).

    python tools/convert_checkpoint.py SRC.pth --config-file CONFIG.yaml \
        --output OUT.safetensors [--variant auto|fcclip|mask_adapter_fcclip|mask_adapter_maftp]
        [--report R.json] [KEY VALUE ...]

The model of CONFIG (+ trailing overrides) is built with random weights to learn the target keys
and shapes; every source key is reported as mapped, unused (with the reason) or the mmmask key as
missing. The output loads with ``MODEL.WEIGHTS OUT.safetensors`` (missing keys keep their
initialisation). Shapes of the published ConvNeXt-L models, for example::

    MODEL.CLIP.MODEL_NAME convnext_large_d_320 MODEL.PMP.NUM_QUERIES 250 MODEL.PMP.HIDDEN_DIM 256
    MODEL.PMP.MASK_DIM 256 MODEL.PMP.DEC_LAYERS 9 MODEL.PMP.NHEADS 8 MODEL.PMP.DIM_FEEDFORWARD 2048
    MODEL.MASK_ADAPTER.HIDDEN_DIM 768 MODEL.MASK_ADAPTER.NUM_BLOCKS 3 MODEL.MASK_ADAPTER.NUM_MAPS 16
"""

import argparse
import sys

from mmmask.config import load_cfg
from mmmask.utils.convert import VARIANTS, convert_official, load_official_checkpoint
from mmmask.utils.weights import save_safetensors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="official checkpoint (.pth, .pkl or .safetensors)")
    p.add_argument("--config-file", required=True, help="mmmask config of the target model")
    p.add_argument("--output", required=True, help="where to write the .safetensors")
    p.add_argument("--variant", default="auto", choices=("auto",) + VARIANTS)
    p.add_argument("--report", help="write the full key report here (JSON)")
    args, opts = p.parse_known_args(argv)
    bad = [o for o in opts if o.startswith("--")]
    if bad or len(opts) % 2:
        p.error(f"unknown flags {bad}" if bad else "config overrides come as KEY VALUE pairs")
    try:
        from mmmask.modeling import build_model

        state = load_official_checkpoint(args.source)
        cfg = load_cfg(args.config_file, ["MODEL.CLIP.PRETRAINED", "", "MODEL.WEIGHTS", ""]
                       + opts)
        target = build_model(cfg).state_dict()
        report = convert_official(state, target,
                                  variant=None if args.variant == "auto" else args.variant)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    if not report.state:
        print("error: nothing could be mapped; check --config-file and --variant", file=sys.stderr)
        return 1
    save_safetensors(report.state, args.output)
    if args.report:
        report.write_json(args.report)
    print(f"wrote {args.output} ({len(report.state)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
