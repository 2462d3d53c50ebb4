"""The ``mmmask`` console command: segment, generate, demo.

Every sub-command answers bad input with one line on stderr and a non-zero exit status; set
``MMMASK_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", default=None, metavar="F",
                   help="model config (default: the shipped Shapes-OV model)")
    p.add_argument("--weights", default=None, metavar="W", help="weights file (overrides MODEL.WEIGHTS)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: MODEL.DEVICE)")
    p.epilog = "Trailing KEY VALUE pairs (e.g. MODEL.DEVICE cpu) override config keys."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmmask",
        description="Open-vocabulary segmentation (PMP / SAM + Mask-Adapter) and causal-masked "
                    "multimodal generation (CM3).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    seg = sub.add_parser("segment", help="segment images for any vocabulary")
    seg.add_argument("images", nargs="+", metavar="IMAGE")
    voc = seg.add_mutually_exclusive_group()
    voc.add_argument("--vocab", default=None, metavar="V",
                     help="classes split by ',', synonyms by '|': \"person|people,car,grass|lawn\"")
    voc.add_argument("--vocab-file", default=None, metavar="F",
                     help="one class per line, synonyms split by ',' (optional 'id:' prefix)")
    seg.add_argument("--task", default="semantic", choices=["semantic", "panoptic", "instance"])
    seg.add_argument("--generator", default="pmp", choices=["pmp", "sam"])
    seg.add_argument("--score-threshold", type=float, default=0.0)
    seg.add_argument("--out", default="mmmask_out", metavar="DIR", help="output folder")
    _add_model_args(seg)

    gen = sub.add_parser("generate", help="caption images, generate or infill images (CM3)")
    parser.generate_parser = gen  # for printing its help when no mode is given
    gsub = gen.add_subparsers(dest="mode", metavar="MODE")
    cap = gsub.add_parser("caption", help="print one caption per image: STEM<TAB>caption")
    cap.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_args(cap)
    img = gsub.add_parser("image", help="generate an image from text")
    img.add_argument("text", metavar="TEXT")
    img.add_argument("--out", required=True, metavar="F.png")
    img.add_argument("--seed", type=int, default=0)
    img.add_argument("--cfg-scale", type=float, default=3.0, help="classifier-free guidance scale")
    _add_model_args(img)
    inf = gsub.add_parser("infill", help="regenerate a region of an image from a prompt")
    inf.add_argument("image", metavar="IMAGE")
    region = inf.add_mutually_exclusive_group(required=True)
    region.add_argument("--box", metavar="x0,y0,x1,y1")
    region.add_argument("--mask", metavar="M.png")
    region.add_argument("--vocab-target", metavar="LABEL",
                        help="segment the image and regenerate this label's region")
    inf.add_argument("--prompt", required=True, metavar="TEXT")
    inf.add_argument("--out", required=True, metavar="F.png")
    inf.add_argument("--seed", type=int, default=0)
    _add_model_args(inf)
    inf.add_argument("--seg-config-file", default=None, metavar="F",
                     help="segmenter config for --vocab-target (default: the shipped one)")
    inf.add_argument("--seg-weights", default=None, metavar="W",
                     help="segmenter weights for --vocab-target (overrides its MODEL.WEIGHTS)")
    inf.add_argument("--seg-opts", default=None, metavar="\"KEY VALUE ...\"",
                     help="segmenter config overrides, one quoted string (trailing KEY VALUE "
                          "pairs go to the CM3 config)")

    demo = sub.add_parser("demo", help="start the Gradio demo")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--share", action="store_true", help=argparse.SUPPRESS)
    _add_model_args(demo)
    add_cm3_demo_args(demo)
    return parser


def add_cm3_demo_args(p: argparse.ArgumentParser) -> None:
    """The demo's generation model: ``--cm3-config-file``, ``--cm3-weights``, ``--cm3-opts``."""
    p.add_argument("--cm3-config-file", default=None, metavar="F",
                   help="CM3 config of the Generate tab (default: the shipped Shapes-OV model)")
    p.add_argument("--cm3-weights", default=None, metavar="W",
                   help="CM3 weights (overrides MODEL.WEIGHTS of the CM3 config)")
    p.add_argument("--cm3-opts", default="", metavar="\"KEY VALUE ...\"",
                   help="CM3 config overrides, one quoted string")


def _vocab(args):
    from mmmask.data.vocab import parse_vocab, read_vocab_file

    if args.vocab_file:
        return read_vocab_file(args.vocab_file)
    if args.vocab is not None:
        return parse_vocab(args.vocab)
    return None


def cmd_segment(args) -> int:
    vocab = _vocab(args)
    folders = [p for p in args.images if os.path.isdir(p)]
    if folders:
        raise CLIError(f"{folders[0]} is a directory, not an image; give image files "
                       f"(e.g. {os.path.join(folders[0], '*.png')})")
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise CLIError(f"image not found: {', '.join(missing)}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CLIError(f"--out {args.out} is a file; give a folder for the results")
    from mmmask.data.image_io import read_image  # torch loads only once the input looks right
    from mmmask.predictor import SegmentationPredictor, write_result

    predictor = SegmentationPredictor.from_files(args.config_file, args.weights, args.opts, args.device)
    failed = 0
    for path in args.images:
        try:
            image = read_image(path, int(predictor.cfg.INPUT.MAX_PIXELS))
            result = predictor.predict(image, vocab, task=args.task, generator=args.generator,
                                       score_threshold=args.score_threshold)
        except ValueError as e:  # one bad image does not stop the others
            msg = str(e) if str(e).startswith(path) else f"{path}: {e}"  # name the file once
            print(f"error: {msg}", file=sys.stderr)
            failed += 1
            continue
        png, js = write_result(result, image, path, args.out)
        labels = sorted({s["label"] for s in result.segments})
        print(f"{path}: {len(result.segments)} segments ({', '.join(labels)}) -> {png}, {js}")
    return 1 if failed else 0


def cmd_generate(args) -> int:
    from mmmask.cm3.cli import run_generate

    return run_generate(args)


def load_demo_module(filename: str = "app.py"):
    """``demo/<filename>`` of the source checkout (the demo is not in the installed package),
    imported once as ``mmmask_demo_<stem>``."""
    import importlib.util
    from pathlib import Path

    name = f"mmmask_demo_{Path(filename).stem}"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "demo" / filename
    if not path.is_file():
        raise CLIError(f"the demo is not installed ({path}); run from a source checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def cmd_demo(args) -> int:
    return load_demo_module().launch(host=args.host, port=args.port, config_file=args.config_file,
                         weights=args.weights, opts=args.opts, device=args.device,
                         cm3_config_file=args.cm3_config_file, cm3_weights=args.cm3_weights,
                         cm3_opts=shlex.split(args.cm3_opts))


_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def split_opts(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` at the first config key (``MODEL.DEVICE``): (arguments, KEY VALUE opts)."""
    for i, tok in enumerate(argv):
        if _KEY.match(tok) and not (i and argv[i - 1].startswith("--") and "=" not in argv[i - 1]
                                    and argv[i - 1] in _VALUE_FLAGS):
            return argv[:i], argv[i:]
    return argv, []


_VALUE_FLAGS = {"--vocab", "--vocab-file", "--task", "--generator", "--out", "--config-file",
                "--weights", "--device", "--prompt", "--box", "--mask", "--vocab-target", "--seed",
                "--host", "--port", "--score-threshold", "--cfg-scale", "--seg-config-file",
                "--seg-weights", "--seg-opts", "--cm3-config-file", "--cm3-weights", "--cm3-opts"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, opts = split_opts(argv)
    args = parser.parse_args(argv)
    args.opts = opts
    if args.command is None or (args.command == "generate" and args.mode is None):
        (parser if args.command is None else parser.generate_parser).print_help()
        return EXIT_USAGE
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    handler = {"segment": cmd_segment, "generate": cmd_generate, "demo": cmd_demo}[args.command]
    return run_guarded(lambda: handler(args))


def run_guarded(fn) -> int:
    """Run ``fn()``; a user error becomes one line on stderr and exit status 2, never a traceback.

    ``MMMASK_DEBUG=1`` lets exceptions through.
    """
    if os.environ.get("MMMASK_DEBUG"):
        return fn()
    from mmmask.config import ConfigError

    try:
        return fn()
    except (CLIError, ConfigError, ValueError, KeyError, FileNotFoundError, RuntimeError, OSError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg.strip().splitlines()[0] if msg.strip() else type(e).__name__}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback dump
        if _is_yaml_error(e):
            print(f"error: {_yaml_message(e)}", file=sys.stderr)
            return EXIT_USAGE
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {first} (MMMASK_DEBUG=1 shows the "
              f"traceback)", file=sys.stderr)
        return 1


def _is_yaml_error(e: Exception) -> bool:
    return any(c.__name__ == "YAMLError" and c.__module__.startswith("yaml")
               for c in type(e).__mro__)


def _yaml_message(e: Exception) -> str:
    """One line for a config file that is not valid YAML: file, line and PyYAML's reason."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "config file"
    why = "; ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
    return f"{where}: not valid YAML ({why or type(e).__name__})"


if __name__ == "__main__":
    sys.exit(main())
