"""Write the bundled example images of the demo: a few Shapes-OV test renders (256 px PNG).

    python demo/make_examples.py        # -> mmmask/data/examples/shapes_ov_test_<index>.png

The file name keeps the render index, so the annotations can be rendered again with
``mmmask.data.shapes.render_sample(0, "test", index, 256)``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mmmask.data.shapes import render_sample

INDICES = (0, 2, 3, 6)
OUT_DIR = Path(__file__).resolve().parents[1] / "mmmask" / "data" / "examples"


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for i in INDICES:
        sample = render_sample(0, "test", i, 256)
        path = OUT_DIR / f"shapes_ov_test_{i:04d}.png"
        Image.fromarray(sample.image).save(path, optimize=True)
        print(path, "-", sample.caption)


if __name__ == "__main__":
    main()
