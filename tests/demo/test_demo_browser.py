"""The Gradio demo, driven in headless Debian Chromium through Playwright.

One app is served on a free local port for the module (the shipped models where present, else
tiny random-weight ones) and one browser page drives it: segment an uploaded Shapes-OV example,
click-to-segment, generate an image and a caption, and the error messages of bad input.
"""

import json
from pathlib import Path

import pytest

from mmmask.cli import load_demo_module

REPO = Path(__file__).resolve().parents[2]
B = load_demo_module("browser.py")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not B.chromium_available(),
                       reason=f"{B.CHROMIUM} is absent (Debian package 'chromium')"),
]

EXAMPLES = sorted((REPO / "mmmask" / "data" / "examples").glob("shapes_ov_test_*.png"))


def _ground_truth(example: Path):
    """Labels of a bundled example and their pixel areas (re-rendered from its index)."""
    import numpy as np

    from mmmask.data.shapes import CLASS_NAMES, render_sample

    sample = render_sample(0, "test", int(example.stem.rsplit("_", 1)[1]), 256)
    ids, counts = np.unique(sample.sem_seg[sample.sem_seg != 255], return_counts=True)
    return {CLASS_NAMES[i]: int(c) for i, c in zip(ids, counts)}


@pytest.fixture(scope="module")
def models():
    m = B.demo_models(prefer_shipped=True)
    yield m
    m.cleanup()


@pytest.fixture(scope="module")
def page(models):
    with B.serve_demo(models) as url, B.open_page(url) as page:
        yield B.DemoPage(page)


def test_examples_bundled():
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        assert _ground_truth(path), path


def test_segment_tab(page, models, tmp_path):
    example = EXAMPLES[0]
    truth = _ground_truth(example)
    vocab = sorted(truth) + ["sky", "red circle"]  # the true classes plus two absent ones
    page.tab("Segment")
    page.upload("seg-image", example)
    page.set_vocabulary(", ".join(vocab))
    rows = page.segment()
    assert rows, "no segment rows shown"
    labels = [r[1] for r in rows]
    assert set(labels) <= set(vocab), labels
    assert all(int(r[3]) > 0 for r in rows)
    status = page.page.locator("#seg-status").inner_text()
    assert f"{len(rows)} segments" in status
    # the annotated image shows the base image and one legend entry per segment
    assert page.page.locator("#seg-output img").count() >= 1
    legend = page.page.locator("#seg-output").inner_text()
    assert all(lab in legend for lab in labels)
    # the DESIGN.md JSON is offered for download and matches the table
    link = page.page.locator("#seg-json a").first
    link.wait_for(state="visible")
    with page.page.expect_download() as dl:
        link.click()
    saved = tmp_path / "result.json"
    dl.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert data["image"] == example.name and data["vocabulary"] == vocab
    assert [s["label"] for s in data["segments"]] == labels
    assert set(data["semantic"]) == set(labels)
    page.screenshot(tmp_path / "segment.png")
    assert (tmp_path / "segment.png").stat().st_size > 0


@pytest.mark.skipif(not B.shipped_segmenter(),
                    reason="no shipped Shapes-OV weights (mmmask/weights/shapes_ovseg.*): a "
                           "random-weight model cannot name the shapes")
def test_segment_finds_expected_labels(page, tmp_path):
    example = REPO / "mmmask" / "data" / "examples" / "shapes_ov_test_0002.png"
    truth = _ground_truth(example)  # pink ring on sand, against a brick wall
    page.tab("Segment")
    page.choose("vocab-preset", "Shapes-OV (70 classes)")
    page.page.wait_for_function(
        "() => document.querySelector('#vocab textarea').value.split(',').length >= 70")
    page.upload("seg-image", example)
    labels = {r[1] for r in page.segment()}
    page.screenshot(tmp_path / "segment_shipped.png")
    assert set(truth) <= labels, f"expected {sorted(truth)}, shown {sorted(labels)}"


def test_click_tab(page, tmp_path):
    page.tab("Click")
    page.upload("click-image", EXAMPLES[0])
    vocab = ["blue star", "pink star", "wooden floor"]
    page.set_vocabulary(", ".join(vocab))
    img = page.page.locator("#click-image img").first
    box = img.bounding_box()
    img.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    status = page.wait_text("click-status", "SAM IoU")
    rows = page.table_rows("click-table")
    assert rows and {r[0] for r in rows} <= set(vocab)
    assert rows[0][0] in status
    page.screenshot(tmp_path / "click.png")


def test_generate_tab(page, models, tmp_path):
    g = models.generator
    assert g is not None, models.generator_error
    grid = f"{g.grid[0]} x {g.grid[1]}"
    page.tab("Generate")
    page.page.locator("#gen-text textarea, #gen-text input").first.fill("a blue ring on sand")
    page.click("gen-t2i-run")
    info = page.wait_text("gen-info", "Text to image")
    assert grid in info and " s" in info
    page.page.locator("#gen-output img").first.wait_for(state="visible")
    page.upload("gen-image", EXAMPLES[1])
    page.click("gen-caption-run")
    info = page.wait_text("gen-info", "Caption")
    assert grid in info
    page.screenshot(tmp_path / "generate.png")


def test_errors_are_shown_and_server_keeps_serving(page, tmp_path):
    page.tab("Segment")
    page.upload("seg-image", EXAMPLES[0])
    page.set_vocabulary("   ")
    page.click("seg-run")
    assert "vocabulary is empty" in page.error_message()
    page.dismiss_errors()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 20)
    page.page.locator("#seg-image input[type=file]").set_input_files(str(bad))
    page.set_vocabulary("blue star, wooden floor")
    page.click("seg-run")
    assert "broken.png" in page.error_message()
    page.screenshot(tmp_path / "error.png")
    page.dismiss_errors()
    page.upload("seg-image", EXAMPLES[0])  # the server still answers
    rows = page.segment()
    assert rows and {r[1] for r in rows} <= {"blue star", "wooden floor"}
