"""Driving the demo in headless Chromium (Playwright), for the browser tests and the README
screenshots (``tools/demo_screenshots.py``).

Chromium is Debian's ``/usr/bin/chromium`` (never a Playwright-downloaded browser)::

    with serve_demo(models) as url, open_page(url) as page:
        demo = DemoPage(page)
        demo.upload("seg-image", "mmmask/data/examples/shapes_ov_test_0000.png")
        demo.set_vocabulary("blue star, pink star, wooden floor")
        rows = demo.segment()
"""

import contextlib
import os
import socket
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000  # longest wait for one result

# A tiny random-weight segmenter and CM3 (for tests and screenshots before trained weights exist).
TINY_SEG = ("configs/shapes/pmp.yaml", [
    "MODEL.CLIP.PRETRAINED", "", "MODEL.PMP.NUM_QUERIES", "8", "MODEL.PMP.DEC_LAYERS", "2",
    "MODEL.PMP.HIDDEN_DIM", "32", "MODEL.PMP.MASK_DIM", "32", "MODEL.PMP.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_ADAPTER.HIDDEN_DIM", "32", "INPUT.TEST_SIZE", "64", "MODEL.DEVICE", "cpu"])
TINY_CM3 = ("configs/shapes/cm3.yaml", ["CM3.VQ.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
REPO = Path(__file__).resolve().parents[1]

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium_available", "free_port", "load_app",
           "shipped_segmenter", "shipped_generator", "demo_models", "serve_demo", "open_page",
           "DemoPage"]


def chromium_available() -> bool:
    return os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_app():
    """``demo/app.py`` as a module (it is not part of the installed package)."""
    from mmmask.cli import load_demo_module

    return load_demo_module("app.py")


def shipped_segmenter() -> bool:
    """Whether the trained Shapes-OV segmentation weights are shipped in this checkout."""
    from mmmask.utils.weights import SHIPPED_DIR

    return all((SHIPPED_DIR / f).is_file()
               for f in ("shapes_ovseg.yaml", "shapes_ovseg.safetensors"))


def shipped_generator() -> bool:
    """Whether a trained CM3 model is shipped in this checkout."""
    from mmmask.utils.weights import SHIPPED_DIR

    return (SHIPPED_DIR / "shapes_cm3.yaml").is_file()


def demo_models(prefer_shipped: bool = True):
    """``DemoModels`` of the shipped weights where present, else the tiny random-weight ones."""
    app = load_app()
    seg_cfg, seg_opts = (None, None) if prefer_shipped and shipped_segmenter() else (
        str(REPO / TINY_SEG[0]), list(TINY_SEG[1]))
    cm3_cfg, cm3_w, cm3_opts = (None, None, None) if prefer_shipped and shipped_generator() \
        else (str(REPO / TINY_CM3[0]), "", list(TINY_CM3[1]))
    return app.DemoModels.load(seg_cfg, None, seg_opts, "cpu", cm3_cfg, cm3_w, cm3_opts)


@contextlib.contextmanager
def serve_demo(models, port: int | None = None, concurrency: int = 2):
    """Serve the demo over ``models`` on 127.0.0.1 (a free port by default); yields the URL."""
    app = load_app()
    blocks, url = app.start(models, "127.0.0.1", port or free_port(), concurrency)
    try:
        yield url
    finally:
        blocks.close()


@contextlib.contextmanager
def open_page(url: str, width: int = 1280, height: int = 1100):
    """A Playwright page on ``url`` in headless Debian Chromium, the app loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.locator("#vocab textarea").wait_for(state="visible")
            yield page
        finally:
            browser.close()


class DemoPage:
    """Actions on the demo page, by the components' ``elem_id``."""

    def __init__(self, page):
        self.page = page

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def set_vocabulary(self, text: str) -> None:
        box = self.page.locator("#vocab textarea")
        box.fill(text)
        box.blur()

    def choose(self, elem_id: str, option: str) -> None:
        """Pick ``option`` in the dropdown ``elem_id``."""
        self.page.locator(f"#{elem_id} input").first.click()
        self.page.get_by_role("option", name=option, exact=True).click()

    def upload(self, elem_id: str, path: str, preview: bool = True) -> None:
        """Upload a file into an image input (clearing the previous one) and wait until the
        server has it (and, with ``preview``, until the page shows it)."""
        clear = self.page.locator(f"#{elem_id} button[aria-label='Clear']")
        if clear.count():
            clear.first.click()
        with self.page.expect_response(lambda r: "/upload" in r.url):
            self.page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
        if preview:
            self.page.locator(f"#{elem_id} img").first.wait_for(state="visible")

    def click(self, elem_id: str) -> None:
        self.page.locator(f"#{elem_id}").click()

    def table_rows(self, elem_id: str) -> list[list[str]]:
        """The body cells of a Dataframe (a virtual grid of ``role=row`` divs), row by row."""
        rows = self.page.locator(f"#{elem_id} .virtual-row[role=row]")
        out = []
        for i in range(rows.count()):
            cells = rows.nth(i).locator("[role=gridcell]")
            out.append([cells.nth(j).inner_text().strip() for j in range(cells.count())])
        return [r for r in out if any(r)]

    def wait_text(self, elem_id: str, needle: str) -> str:
        """Wait until component ``elem_id`` shows ``needle``; returns its text."""
        loc = self.page.locator(f"#{elem_id}")
        loc.get_by_text(needle, exact=False).first.wait_for(state="visible")
        return loc.inner_text()

    def run(self, button_id: str, output_id: str) -> None:
        """Press a button and wait until the request it queues has finished (successfully or
        not): the status tracker of ``output_id`` is hidden again."""
        with self.page.expect_response(lambda r: "/queue/join" in r.url):
            self.click(button_id)
        self.page.locator(f"#{output_id} [data-testid=status-tracker].hide").first.wait_for(
            state="attached")

    def segment(self) -> list[list[str]]:
        """Press Segment; wait for the annotated image and the table; returns the table rows."""
        self.run("seg-run", "seg-status")
        self.wait_text("seg-status", "segments")
        self.page.locator("#seg-output img").first.wait_for(state="visible")
        self.page.locator("#seg-table [role=gridcell]").first.wait_for(state="visible")
        return self.table_rows("seg-table")

    def error_message(self) -> str:
        """Wait for an error message (toast); returns its text."""
        toast = self.page.locator(".toast-body").first
        toast.wait_for(state="visible")
        return toast.inner_text()

    def dismiss_errors(self) -> None:
        """Close the error messages shown."""
        from playwright.sync_api import Error as PlaywrightError

        close = self.page.locator(".toast-close")
        for _ in range(20):
            n = close.count()
            if not n:
                return
            try:  # a message may vanish by itself between count() and click()
                close.first.click(timeout=2000)
                self.page.wait_for_function(
                    f"() => document.querySelectorAll('.toast-close').length < {n}",
                    timeout=5000)
            except PlaywrightError:
                pass

    def screenshot(self, path: str, elem_id: str | None = None) -> str:
        """A PNG of one component, or of the whole page."""
        if elem_id:
            self.page.locator(f"#{elem_id}").screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=True)
        return str(path)
