"""Callbacks of the demo: page inputs -> Predictor-layer calls -> page outputs.

No model logic here: segmentation is ``SegmentationPredictor.predict`` / ``.click``, generation
is ``CM3Generator`` and segment-then-edit is ``mmmask.cm3.edit.segment_then_edit``. User errors
(bad image, empty vocabulary, bad box...) become ``gr.Error`` messages shown in the page; the
server keeps serving.
"""

import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

import mmmask.data
from mmmask.data.image_io import read_image
from mmmask.data.shapes import shapes_metadata
from mmmask.data.vocab import Vocabulary, parse_vocab, read_vocab_file
from mmmask.predictor import TASKS, SegmentationPredictor, default_config_file

logger = logging.getLogger("mmmask.demo")

DATA_DIR = Path(mmmask.data.__file__).resolve().parent
EXAMPLES = sorted((DATA_DIR / "examples").glob("*.png"))
CLASS_LISTS = {"COCO panoptic (133 classes)": "coco_panoptic.txt",
               "ADE20K (150 classes)": "ade150.txt"}
MAX_PIXELS = 16_000_000  # uploads with more pixels are refused before decoding
DISPLAY_SIDE = 256  # generated images smaller than this are shown enlarged
TABLE_COLUMNS = ("id", "label", "score", "area (px)")
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, RuntimeError)

__all__ = ["DemoModels", "DemoCallbacks", "EXAMPLES", "TASKS", "TABLE_COLUMNS", "empty_prompts",
           "reset_prompts", "box_corner"]


def _one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    msg = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return msg


def shows_errors(fn):
    """Turn exceptions of a callback into a message in the page (``gr.Error``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(_one_line(e), duration=None, print_exception=False) from None
        except Exception as e:  # a bug: log it, tell the user, keep serving
            logger.exception("demo request failed")
            raise gr.Error(f"Internal error ({type(e).__name__}): {_one_line(e)}",
                           duration=None) from None

    return wrapper


@dataclass
class DemoModels:
    """The models behind the page: a segmenter and (optionally) a CM3 generator."""

    segmenter: SegmentationPredictor
    generator: object | None = None  # mmmask.cm3.api.CM3Generator
    generator_error: str = ""  # why there is no generator
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="mmmask_demo_"))

    @classmethod
    def load(cls, config_file=None, weights=None, opts=None, device=None, cm3_config_file=None,
             cm3_weights=None, cm3_opts=None) -> "DemoModels":
        """Segmenter from ``config_file``/``weights`` (default: shipped); CM3 likewise. A missing
        CM3 model only disables the Generate tab."""
        if config_file is None and not os.path.isfile(default_config_file()):
            raise FileNotFoundError(
                f"No segmentation model is shipped with this install ({default_config_file()} "
                "is missing); pass --config-file F and --weights W")
        segmenter = SegmentationPredictor.from_files(config_file, weights, opts, device)
        from mmmask.cm3.api import CM3Generator

        try:
            generator = CM3Generator.from_files(cm3_config_file, cm3_weights, cm3_opts, device)
            return cls(segmenter, generator)
        except USER_ERRORS as e:
            logger.warning("Generate tab disabled: %s", _one_line(e))
            return cls(segmenter, None, _one_line(e))

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def load_image(path: str | None) -> np.ndarray:
    """The uploaded file as HxWx3 uint8 (EXIF-rotated, gray/RGBA/16-bit converted)."""
    if not path:
        raise ValueError("No image: upload an image or pick an example first")
    return read_image(path, max_pixels=MAX_PIXELS, name=Path(path).name)


def annotations(result) -> list[tuple[np.ndarray, str]]:
    """AnnotatedImage annotations: one (HxW float mask, name) per segment; repeated labels
    (instances) are numbered."""
    seen: dict[str, int] = {}
    out = []
    for s in result.segments:
        seen[s["label"]] = seen.get(s["label"], 0) + 1
        name = s["label"] if seen[s["label"]] == 1 else f"{s['label']} ({seen[s['label']]})"
        out.append((s["mask"].astype(np.float32), name))
    return out


def segments_table(result) -> pd.DataFrame:
    rows = [[s["id"], s["label"], round(float(s["score"]), 3), int(s["mask"].sum())]
            for s in result.segments]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def empty_prompts() -> dict:
    return {"points": [], "labels": [], "box": None, "corner": None}


def reset_prompts():
    """Click tab outputs for a new image / cleared prompts."""
    return None, pd.DataFrame(columns=["label", "probability"]), "", empty_prompts()


def draw_prompts(image: np.ndarray, prompts: dict) -> np.ndarray:
    """The image with positive (green) / negative (red) points, box and pending corner."""
    canvas = Image.fromarray(image)
    d = ImageDraw.Draw(canvas)
    r = max(3, min(image.shape[:2]) // 60)
    for (x, y), lab in zip(prompts["points"], prompts["labels"]):
        d.ellipse([x - r, y - r, x + r, y + r], fill=(40, 220, 60) if lab else (230, 40, 40),
                  outline=(255, 255, 255))
    if prompts["box"] is not None:
        d.rectangle(prompts["box"], outline=(255, 215, 0), width=max(2, r // 2))
    if prompts["corner"] is not None:
        x, y = prompts["corner"]
        d.line([x - 2 * r, y, x + 2 * r, y], fill=(255, 215, 0), width=2)
        d.line([x, y - 2 * r, x, y + 2 * r], fill=(255, 215, 0), width=2)
    return np.asarray(canvas)


def box_corner(corner, box_text, evt: gr.SelectData):
    """Generate tab: two clicks on the image set the infill box."""
    x, y = (int(v) for v in evt.index[:2])
    if corner is None:
        return [x, y], box_text, gr.skip()
    x0, y0 = corner
    box = f"{min(x0, x)},{min(y0, y)},{max(x0, x)},{max(y0, y)}"
    return None, box, "box"


def parse_box(text: str) -> list[float]:
    nums = [v for v in re.split(r"[,\s]+", (text or "").strip()) if v]
    try:
        box = [float(v) for v in nums]
    except ValueError:
        box = []
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"Box {text!r} is not x0,y0,x1,y1 pixels with x0 < x1 and y0 < y1")
    return box


class DemoCallbacks:
    """The page's callbacks over loaded models."""

    def __init__(self, models: DemoModels):
        self.models = models
        self.default_vocab_text = models.segmenter.default_vocabulary.to_string()
        self._gen_lock = threading.Lock()  # CM3Generator is not meant for concurrent calls

    # -- vocabulary ----------------------------------------------------------------------------
    def presets(self) -> dict[str, str]:
        shapes = Vocabulary.from_names(shapes_metadata()["classes"]).to_string()
        out = {"Shapes-OV (70 classes)": shapes}
        if self.default_vocab_text != shapes:
            out["Model default"] = self.default_vocab_text
        for name, file in CLASS_LISTS.items():
            out[name] = read_vocab_file(str(DATA_DIR / "class_lists" / file)).to_string()
        return out

    @staticmethod
    def vocab_labels(text: str) -> list[str]:
        try:
            return parse_vocab(text).labels
        except ValueError:
            return []

    def label_choices(self, text: str, current: str | None):
        """The infill label choices follow the vocabulary; the chosen label stays if listed."""
        labels = self.vocab_labels(text)
        value = current if current in labels else (labels[0] if labels else None)
        return gr.Dropdown(choices=labels, value=value)

    def _json_file(self, result, image_path: str) -> str:
        import json

        folder = Path(self.models.workdir) / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        path = folder / f"{Path(image_path).stem}.json"
        path.write_text(json.dumps(result.to_json(image=Path(image_path).name),
                                   ensure_ascii=False), encoding="utf-8")
        return str(path)

    # -- Segment tab ---------------------------------------------------------------------------
    @shows_errors
    def segment(self, image_path, vocab_text, task, generator, threshold,
                progress=gr.Progress()):
        t0 = time.perf_counter()
        progress(0.0, desc="Reading the image")
        image = load_image(image_path)
        vocab = parse_vocab(vocab_text)
        progress(0.2, desc="SAM masks + naming" if generator == "sam" else "Segmenting")
        result = self.models.segmenter.predict(image, vocab, task=task, generator=generator,
                                               score_threshold=float(threshold or 0.0))
        progress(0.9, desc="Drawing")
        names = ", ".join(sorted({s["label"] for s in result.segments}))
        names = names or "none above the threshold"
        status = (f"**{len(result.segments)} segments** ({names}) · {task} · "
                  f"{generator.upper()} · {time.perf_counter() - t0:.2f} s")
        return ((image, annotations(result)), segments_table(result),
                self._json_file(result, image_path), status)

    # -- Click tab -----------------------------------------------------------------------------
    @shows_errors
    def click(self, image_path, prompts, mode, vocab_text, evt: gr.SelectData,
              progress=gr.Progress()):
        image = load_image(image_path)
        prompts = {k: (list(v) if isinstance(v, list) else v)
                   for k, v in (prompts or empty_prompts()).items()}
        x, y = (float(v) for v in evt.index[:2])
        if mode == "box":
            if prompts["corner"] is None:
                prompts["corner"] = [x, y]
                return ((draw_prompts(image, prompts), []), gr.skip(),
                        "Box: now click the opposite corner.", prompts)
            (x0, y0), prompts["corner"] = prompts["corner"], None
            prompts["box"] = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
        else:
            prompts["points"].append([x, y])
            prompts["labels"].append(1 if mode == "positive" else 0)
        t0 = time.perf_counter()
        progress(0.1, desc="SAM + Mask-Adapter")
        vocab = parse_vocab(vocab_text)
        result = self.models.segmenter.click(image, prompts["points"], prompts["labels"],
                                             prompts["box"], vocab)
        view = (draw_prompts(image, prompts), annotations(result))
        if not result.segments:
            empty = pd.DataFrame(columns=["label", "probability"])
            return view, empty, "SAM found no mask.", prompts
        seg = result.segments[0]
        table = pd.DataFrame([[n, round(p, 3)] for n, p in seg["candidates"]],
                             columns=["label", "probability"])
        status = (f"**{seg['label']}** ({seg['score']:.2f}) · {int(seg['mask'].sum())} px · "
                  f"SAM IoU {seg['sam_score']:.2f} · {time.perf_counter() - t0:.2f} s")
        return view, table, status, prompts

    # -- Generate tab --------------------------------------------------------------------------
    def generator_note(self) -> str:
        g = self.models.generator
        if g is None:
            return f"**Generation is unavailable:** {self.models.generator_error}"
        return (f"CM3 over a VQ tokenizer: images are {g.vq.image_size} px, "
                f"{g.grid[0]} x {g.grid[1]} tokens.")

    def _generator(self):
        if self.models.generator is None:
            raise RuntimeError(f"Generation is unavailable: {self.models.generator_error}")
        return self.models.generator

    def _info(self, t0: float, what: str) -> str:
        g = self.models.generator
        n = g.grid[0] * g.grid[1]
        return (f"{what} · VQ token grid **{g.grid[0]} x {g.grid[1]}** ({n} tokens, "
                f"{g.vq.image_size} px) · **{time.perf_counter() - t0:.2f} s**")

    @shows_errors
    def caption(self, image_path, seed, progress=gr.Progress()):
        g = self._generator()
        image = load_image(image_path)
        t0 = time.perf_counter()
        progress(0.1, desc="Captioning")
        with self._gen_lock:
            text = g.caption(image, seed=int(seed or 0))
        return text, self._info(t0, "Caption")

    @shows_errors
    def text_to_image(self, text, seed, progress=gr.Progress()):
        g = self._generator()
        if not text or not text.strip():
            raise ValueError("The text is empty: describe the image to generate")
        t0 = time.perf_counter()
        progress(0.1, desc="Sampling image tokens")
        with self._gen_lock:
            image = g.text_to_image(text, seed=int(seed or 0))
        k = max(1, DISPLAY_SIDE // max(image.shape[:2]))  # small samples: shown k times larger
        shown = image.repeat(k, axis=0).repeat(k, axis=1)  # nearest neighbour, (kH, kW, 3)
        return shown, self._info(t0, f"Text to image (shown {k}x)" if k > 1 else "Text to image")

    @shows_errors
    def infill(self, image_path, region, box_text, label, prompt, seed, progress=gr.Progress()):
        g = self._generator()
        image = load_image(image_path)
        if not prompt or not prompt.strip():
            raise ValueError("The infill prompt is empty: describe the new content")
        t0 = time.perf_counter()
        if region == "label":
            from mmmask.cm3.edit import segment_then_edit

            progress(0.1, desc=f"Segmenting {label!r}, then infilling")
            with self._gen_lock:
                out, mask = segment_then_edit(image, label, prompt, self.models.segmenter, g,
                                              seed=int(seed or 0))
            what = f"Segment-then-edit of {label!r} ({int(mask.sum())} px)"
        else:
            box = parse_box(box_text)
            progress(0.1, desc="Infilling")
            with self._gen_lock:
                out = g.infill_image(image, box, prompt, seed=int(seed or 0))
            what = "Box infill"
        return out, self._info(t0, what)
