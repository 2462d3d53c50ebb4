"""Screenshots of the demo's three tabs for the README, taken in headless Chromium.

    python tools/demo_screenshots.py [--out docs] [--random-weights]

Serves the demo over the shipped models (``--random-weights``: tiny random-weight models, for a
checkout without trained weights), drives each tab with the same Playwright helper as the
browser tests (``demo/browser.py``) and writes ``demo_segment.png``, ``demo_click.png`` and
``demo_generate.png``.
"""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "mmmask" / "data" / "examples"


def _browser_helper():
    from mmmask.cli import load_demo_module

    return load_demo_module("browser.py")


def shoot_segment(page, out: Path) -> None:
    page.tab("Segment")
    page.upload("seg-image", EXAMPLES / "shapes_ov_test_0002.png")
    page.set_vocabulary("pink ring|pink donut, white ring, pink star, red circle, "
                        "sand|beach, brick wall, sky, grass")
    page.segment()
    page.screenshot(out / "demo_segment.png")


def shoot_click(page, out: Path) -> None:
    page.tab("Click")
    page.upload("click-image", EXAMPLES / "shapes_ov_test_0006.png")
    page.set_vocabulary("white ring|white donut, blue triangle, pink cross|pink plus sign, "
                        "wooden floor")
    img = page.page.locator("#click-image img").first
    box = img.bounding_box()
    sample_xy = _object_centre("shapes_ov_test_0006.png")
    img.click(position={"x": box["width"] * sample_xy[0], "y": box["height"] * sample_xy[1]})
    page.wait_text("click-status", "SAM IoU")
    page.screenshot(out / "demo_click.png")


def shoot_generate(page, out: Path) -> None:
    page.tab("Generate")
    page.upload("gen-image", EXAMPLES / "shapes_ov_test_0003.png")
    page.run("gen-caption-run", "gen-caption")
    page.wait_text("gen-info", "Caption")
    page.page.locator("#gen-box textarea, #gen-box input").first.fill("20,20,120,110")
    page.page.locator("#gen-infill-prompt textarea, #gen-infill-prompt input").first.fill(
        "a yellow star on sand")
    page.run("gen-infill-run", "gen-output")
    page.wait_text("gen-info", "Box infill")
    page.page.locator("#gen-output img").first.wait_for(state="visible")
    page.screenshot(out / "demo_generate.png")


def _object_centre(name: str) -> tuple[float, float]:
    """Centre (x, y as fractions) of the first object of a bundled example."""
    import numpy as np

    from mmmask.data.shapes import render_sample

    sample = render_sample(0, "test", int(Path(name).stem.rsplit("_", 1)[1]), 256)
    ys, xs = np.nonzero(sample.instances[0]["mask"])
    return float(xs.mean() / 256), float(ys.mean() / 256)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs"), help="folder for the PNG files")
    p.add_argument("--random-weights", action="store_true",
                   help="use tiny random-weight models instead of the shipped ones")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    B = _browser_helper()
    if not B.chromium_available():
        print(f"error: {B.CHROMIUM} not found (apt-get install chromium)", file=sys.stderr)
        return 2
    if not args.random_weights and not B.shipped_segmenter():
        print("error: no shipped weights in mmmask/weights; pass --random-weights to take "
              "screenshots of random-weight models", file=sys.stderr)
        return 2
    if not B.shipped_generator():
        print("note: no shipped CM3 model (mmmask/weights/shapes_cm3.yaml); the Generate tab "
              "uses a random-weight CM3", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = B.demo_models(prefer_shipped=not args.random_weights)
    try:
        with B.serve_demo(models) as url, B.open_page(url, width=1280, height=1000) as page:
            demo = B.DemoPage(page)
            for shoot in (shoot_segment, shoot_click, shoot_generate):
                shoot(demo, out)
                print(f"wrote {out / ('demo_' + shoot.__name__.split('_')[1] + '.png')}")
    finally:
        models.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
