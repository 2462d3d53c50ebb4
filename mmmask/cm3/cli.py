"""``mmmask generate``: caption images, generate images from text, infill or edit a region.

Called by :mod:`mmmask.cli` with the parsed arguments; every bad input raises ``ValueError`` or
``FileNotFoundError`` with one clear line (printed by the command, exit status 2) before any
output file is written.

    mmmask generate caption IMAGE...                         # STEM<TAB>caption per image
    mmmask generate image "a red star on grass" --out F.png [--seed N] [--cfg-scale S]
    mmmask generate infill IMAGE (--box x0,y0,x1,y1 | --mask M.png | --vocab-target LABEL)
                           --prompt "a blue ring" --out F.png [--seed N]
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["run_generate", "parse_box", "read_region_mask", "write_png"]


# ---- pure input helpers ----------------------------------------------------------------------
def parse_box(text: str, height: int, width: int) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (pixels, XYXY) -> a box checked against an ``height`` x ``width`` image.

    Raises ``ValueError`` for bad syntax, an empty box or a box not inside the image.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--box must be four numbers x0,y0,x1,y1 (pixels); got {text!r}") from None
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"--box must be finite numbers; got {text!r}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"--box {text} is empty: need x1 > x0 and y1 > y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"--box {text} is outside the {width}x{height} image "
                         f"(need 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})")
    return x0, y0, x1, y1


def read_region_mask(path: str, height: int, width: int) -> np.ndarray:
    """A mask image (any mode; non-zero / non-black pixels are the region) -> bool HxW.

    Raises ``ValueError`` when its size differs from the image's or it selects no pixel.
    """
    from mmmask.data.image_io import read_image

    m = read_image(path, background=(0, 0, 0)).max(axis=2) > 0  # (H, W); transparent = outside
    if m.shape != (height, width):
        raise ValueError(f"--mask {path} is {m.shape[1]}x{m.shape[0]} but the image is "
                         f"{width}x{height}; they must match")
    if not m.any():
        raise ValueError(f"--mask {path} is empty: no non-zero pixel marks a region")
    return m


def write_png(image: np.ndarray, path: str) -> None:
    """Write uint8 HxWx3 ``image`` to ``path`` atomically (temp file in the folder, then rename)."""
    from PIL import Image

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file; got {path!r}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Output folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(f, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str) -> np.ndarray:
    from mmmask.data.image_io import read_image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image not found: {path}")
    return read_image(path)


def _check_out(path: str) -> None:
    """Validate ``--out`` before any model is built (so bad input fails fast)."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file; got {path!r}")
    if out.is_dir():
        raise ValueError(f"--out {path} is a folder; name a .png file")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Output folder does not exist: {folder}")


def _prompt(text: str | None, flag: str) -> str:
    if text is None or not text.strip():
        raise ValueError(f"{flag} is empty: describe the content to generate")
    return text


# ---- models --------------------------------------------------------------------------------
def _generator(args):
    from .api import CM3Generator

    return CM3Generator.from_files(args.config_file, args.weights, args.opts, args.device)


def _segmenter(args):
    from mmmask.predictor import SegmentationPredictor, default_config_file

    config = getattr(args, "seg_config_file", None)
    if config is None and not os.path.isfile(default_config_file()):
        raise FileNotFoundError(
            f"No segmentation model is shipped with this install ({default_config_file()} is "
            "missing); pass --seg-config-file F and --seg-weights W")
    if config is not None and not os.path.isfile(config):
        raise FileNotFoundError(f"Segmenter config file not found: {config}")
    try:
        opts = shlex.split(getattr(args, "seg_opts", None) or "")
    except ValueError as e:
        raise ValueError(f"--seg-opts is not a valid KEY VALUE list: {e}") from None
    return SegmentationPredictor.from_files(config, getattr(args, "seg_weights", None), opts,
                                            args.device)


# ---- modes ---------------------------------------------------------------------------------
def _caption(args) -> int:
    images = [(p, _read(p)) for p in args.images]  # every image is checked before the model
    gen = _generator(args)
    for path, image in images:
        text = " ".join(gen.caption(image).split())  # one line per image, whatever was sampled
        print(f"{Path(path).stem}\t{text}", flush=True)
    return 0


def _image(args) -> int:
    text = _prompt(args.text, "TEXT")
    _check_out(args.out)
    gen = _generator(args)
    write_png(gen.text_to_image(text, seed=args.seed, cfg_scale=args.cfg_scale), args.out)
    print(args.out)
    return 0


def _infill(args) -> int:
    prompt = _prompt(args.prompt, "--prompt")
    _check_out(args.out)
    image = _read(args.image)
    h, w = image.shape[:2]
    if args.box is not None:
        region: object = parse_box(args.box, h, w)
    elif args.mask is not None:
        if not os.path.isfile(args.mask):
            raise FileNotFoundError(f"Mask image not found: {args.mask}")
        region = read_region_mask(args.mask, h, w)
    else:
        from .edit import segment_then_edit

        segmenter = _segmenter(args)
        gen = _generator(args)
        edited, _ = segment_then_edit(image, args.vocab_target, prompt, segmenter, gen,
                                      seed=args.seed)
        write_png(edited, args.out)
        print(args.out)
        return 0
    gen = _generator(args)
    write_png(gen.infill_image(image, region, prompt, seed=args.seed), args.out)
    print(args.out)
    return 0


_MODES = {"caption": _caption, "image": _image, "infill": _infill}


def run_generate(args) -> int:
    """Run ``mmmask generate MODE`` for parsed ``args``; returns the exit status."""
    if args.mode not in _MODES:
        raise ValueError(f"Unknown generate mode {args.mode!r}; valid: {', '.join(_MODES)}")
    import torch

    with torch.no_grad():
        return _MODES[args.mode](args)
