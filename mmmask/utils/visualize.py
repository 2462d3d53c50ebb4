"""Drawing results: coloured mask overlays with a legend (PIL only)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["palette", "overlay_segments"]


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hues)."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _drawable(text: str, font) -> str:
    """``text`` as the legend font can draw it: PIL's bitmap fallback font (no FreeType) only
    encodes Latin-1, so other characters become "?" there instead of raising. FreeType fonts
    take any text (glyphs they lack show as boxes; the JSON output keeps the exact labels)."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def overlay_segments(image: np.ndarray, masks: list[np.ndarray], labels: list[str],
                     alpha: float = 0.55, legend: bool = True) -> np.ndarray:
    """Blend each boolean mask in a colour per label and add a legend strip on the right.

    image: HxWx3 uint8; masks: HxW bool, one per segment; labels: the segment labels.
    Returns the annotated image (HxW'x3 uint8, wider when a legend is drawn).
    """
    from mmmask.data.image_io import as_rgb_array

    image = as_rgb_array(image)
    names = list(dict.fromkeys(labels))
    colours = dict(zip(names, palette(len(names))))
    out = image.astype(np.float32).copy()
    for m, lab in zip(masks, labels):
        out[m] = out[m] * (1 - alpha) + np.array(colours[lab], np.float32) * alpha
    canvas = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for m, lab in zip(masks, labels):  # outline each segment
        edge = m ^ np.roll(m, 1, 0) | m ^ np.roll(m, 1, 1)
        ys, xs = np.nonzero(edge & m)
        if len(xs):
            draw.point(list(zip(xs.tolist(), ys.tolist())), fill=colours[lab])
    if not legend or not names:
        return np.asarray(canvas)
    font = ImageFont.load_default()
    row = 14
    width = 12 + max(int(draw.textlength(_drawable(n, font), font=font)) for n in names) + 24
    h = max(canvas.height, row * len(names) + 8)
    full = Image.new("RGB", (canvas.width + width, h), (255, 255, 255))
    full.paste(canvas, (0, 0))
    d = ImageDraw.Draw(full)
    for i, n in enumerate(names):
        y = 4 + i * row
        d.rectangle([canvas.width + 6, y + 2, canvas.width + 16, y + 12], fill=colours[n])
        d.text((canvas.width + 22, y), _drawable(n, font), fill=(0, 0, 0), font=font)
    return np.asarray(full)
