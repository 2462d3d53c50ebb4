"""Shapes-OV: the built-in synthetic open-vocabulary benchmark (procedural and seeded).

"Things" are coloured shapes (``"<colour> <shape>"``), "stuff" are textured backgrounds. A fixed
quarter of the classes is *unseen*: segmentation training never labels them (their pixels are
ignore = 255), while image-caption pairs (the stand-in for CLIP's web data) cover every class.
Every unseen thing shares its colour and its shape with seen classes, so naming it needs
composition.

Every sample is a pure function of ``(seed, split, index, size)``: random access, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "STUFF",
    "CLASS_NAMES",
    "CLASS_SYNONYMS",
    "IS_THING",
    "IS_SEEN",
    "IGNORE_LABEL",
    "SPLITS",
    "ShapesSample",
    "render_sample",
    "render_object_crop",
    "render_object_region",
    "make_caption",
    "shapes_metadata",
]

IGNORE_LABEL = 255

# name -> (RGB, synonyms beyond the name)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((215, 35, 35), ()),
    "orange": ((245, 135, 20), ()),
    "yellow": ((240, 215, 35), ()),
    "green": ((35, 165, 60), ()),
    "blue": ((35, 75, 215), ()),
    "purple": ((125, 45, 175), ("violet",)),
    "pink": ((245, 135, 195), ()),
    "white": ((245, 245, 245), ()),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("disk",),
    "square": (),
    "triangle": (),
    "star": (),
    "hexagon": (),
    "cross": ("plus sign",),
    "ring": ("donut",),
    "diamond": ("rhombus",),
}
STUFF: dict[str, tuple[str, ...]] = {
    "sky": (),
    "grass": ("lawn",),
    "sand": ("beach",),
    "water": ("sea",),
    "brick wall": ("bricks",),
    "wooden floor": ("parquet",),
}
# Phrases used in captions for each stuff class.
_STUFF_PHRASES = {
    "sky": ("under the sky", "against the sky", "in the sky"),
    "grass": ("on grass", "on the lawn", "on green grass"),
    "sand": ("on sand", "on the beach", "on sandy ground"),
    "water": ("on water", "in the sea", "floating on water"),
    "brick wall": ("in front of a brick wall", "against bricks", "by a brick wall"),
    "wooden floor": ("on a wooden floor", "on parquet", "on wooden planks"),
}

_COLOUR_NAMES = list(COLOURS)
_SHAPE_NAMES = list(SHAPES)
_STUFF_NAMES = list(STUFF)
NUM_THINGS = len(_COLOUR_NAMES) * len(_SHAPE_NAMES)

CLASS_NAMES: list[str] = [f"{c} {s}" for c in _COLOUR_NAMES for s in _SHAPE_NAMES] + _STUFF_NAMES
CLASS_SYNONYMS: list[list[str]] = []
for _c in _COLOUR_NAMES:
    for _s in _SHAPE_NAMES:
        _syn = [f"{_c} {_s}"]
        _syn += [f"{_c} {s2}" for s2 in SHAPES[_s]]
        _syn += [f"{c2} {_s}" for c2 in COLOURS[_c][1]]
        CLASS_SYNONYMS.append(_syn)
CLASS_SYNONYMS += [[n, *STUFF[n]] for n in _STUFF_NAMES]
IS_THING: list[bool] = [True] * NUM_THINGS + [False] * len(_STUFF_NAMES)


def _thing_seen(ci: int, si: int) -> bool:
    # Two unseen colours per shape and two unseen shapes per colour: composition needed.
    return (si - ci) % len(_SHAPE_NAMES) not in (0, 4)


_UNSEEN_STUFF = {"water", "wooden floor"}
IS_SEEN: list[bool] = [
    _thing_seen(ci, si) for ci in range(len(_COLOUR_NAMES)) for si in range(len(_SHAPE_NAMES))
] + [n not in _UNSEEN_STUFF for n in _STUFF_NAMES]
THING_ID = {(c, s): ci * len(_SHAPE_NAMES) + si for ci, c in enumerate(_COLOUR_NAMES)
            for si, s in enumerate(_SHAPE_NAMES)}
STUFF_ID = {n: NUM_THINGS + i for i, n in enumerate(_STUFF_NAMES)}

SPLITS = {"train": 0, "val": 1, "test": 2, "captions": 3}


def shapes_metadata() -> dict:
    """Catalog metadata: classes with synonyms, thing/stuff and seen/unseen flags."""
    return {
        "classes": [list(s) for s in CLASS_SYNONYMS],
        "class_names": list(CLASS_NAMES),
        "is_thing": list(IS_THING),
        "is_seen": list(IS_SEEN),
        "ignore_label": IGNORE_LABEL,
        "evaluator_type": "sem_seg",
    }


@dataclass
class ShapesSample:
    """One rendered image with its annotations.

    image: HxWx3 uint8. sem_seg: HxW uint8 class ids (255 = ignore). instances: one dict per
    visible thing, ``{"category_id", "mask": HxW bool}``, in drawing order. caption mentions
    every object and stuff class in the image.
    """

    image: np.ndarray
    sem_seg: np.ndarray
    instances: list[dict] = field(default_factory=list)
    stuff_ids: list[int] = field(default_factory=list)
    caption: str = ""


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise KeyError(f"Unknown Shapes-OV split {split!r}; valid: {', '.join(SPLITS)}")
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


# ---- textures -----------------------------------------------------------------------------

def _noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise in [0, 1): random cells upsampled bilinearly to size x size."""
    low = rng.random(cells, dtype=np.float32)
    return np.asarray(Image.fromarray(low, mode="F").resize((size, size), Image.BILINEAR))


def _texture(name: str, rng: np.random.Generator, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    fine = rng.random((s, s), dtype=np.float32) - 0.5
    if name == "sky":
        top, bottom = np.array([90, 150, 235]), np.array([175, 210, 250])
        img = top + (bottom - top) * yy[..., None]
        clouds = np.clip((_noise(rng, s, (4, 6)) - 0.55) * 4, 0, 1)[..., None]
        img = img * (1 - clouds) + 250 * clouds
    elif name == "grass":
        streak = _noise(rng, s, (3, 24)) - 0.5
        img = np.array([55, 140, 45]) + (streak * 70 + fine * 40)[..., None] * np.array([0.5, 1, 0.4])
    elif name == "sand":
        img = np.array([222, 198, 145]) + (fine * 45 + (_noise(rng, s, (6, 6)) - 0.5) * 25)[..., None]
    elif name == "water":
        phase = rng.uniform(0, 6.3)
        waves = np.sin(yy * 60 + phase + _noise(rng, s, (5, 5)) * 6)
        img = np.array([35, 85, 165]) + (waves * 22 + fine * 10)[..., None] * np.array([0.6, 0.8, 1])
    elif name == "brick wall":
        rows = max(4, int(rng.integers(7, 11)))
        bh = 1.0 / rows
        row = np.floor(yy / bh)
        shift = (row % 2) * 0.5 * (2 * bh)
        bx = ((xx + shift) / (2 * bh)) % 1.0
        by = (yy / bh) % 1.0
        mortar = (bx < 0.06) | (by < 0.1)
        img = np.array([165, 65, 45]) + (fine * 25 + (_noise(rng, s, (8, 8)) - 0.5) * 30)[..., None]
        img[mortar] = np.array([205, 200, 190])
    elif name == "wooden floor":
        planks = max(3, int(rng.integers(4, 7)))
        px = (xx * planks) % 1.0
        grain = np.sin((xx * planks * 40) + _noise(rng, s, (3, 3)) * 10)
        img = np.array([150, 98, 52]) + (grain * 18 + fine * 15)[..., None]
        img[px < 0.04] = np.array([80, 50, 25])
    else:
        raise KeyError(name)
    return img.astype(np.float32)


# ---- shapes -------------------------------------------------------------------------------

def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[list[tuple]]:
    """Polygons (first = outline; a second one is a hole) of a shape of radius r."""

    def ring_pts(radii, n, offset=0.0):
        return [
            (cx + radii[k % len(radii)] * math.cos(rot + offset + 2 * math.pi * k / n),
             cy + radii[k % len(radii)] * math.sin(rot + offset + 2 * math.pi * k / n))
            for k in range(n)
        ]

    if shape == "circle":
        return [ring_pts([r], 48)]
    if shape == "ring":
        return [ring_pts([r], 48), ring_pts([0.55 * r], 48)]
    if shape == "square":
        return [ring_pts([r * 0.92], 4, math.pi / 4)]
    if shape == "triangle":
        return [ring_pts([r * 1.05], 3, -math.pi / 2)]
    if shape == "hexagon":
        return [ring_pts([r], 6)]
    if shape == "star":
        return [ring_pts([r * 1.08, r * 0.45], 10, -math.pi / 2)]
    if shape == "diamond":
        pts = [(0, -r * 1.05), (r * 0.62, 0), (0, r * 1.05), (-r * 0.62, 0)]
    elif shape == "cross":
        a, w = r * 0.95, r * 0.34
        pts = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w),
               (-a, w), (-a, -w), (-w, -w)]
    else:
        raise KeyError(shape)
    c, s_ = math.cos(rot), math.sin(rot)
    return [[(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in pts]]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    polys = _polygon(shape, cx, cy, r, rot)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.polygon(polys[0], fill=1)
    for hole in polys[1:]:
        draw.polygon(hole, fill=0)
    return np.asarray(img, dtype=bool)


def _colour(name: str, rng: np.random.Generator) -> np.ndarray:
    base = np.array(COLOURS[name][0], np.float32)
    return np.clip(base + rng.normal(0, 8, 3), 0, 255)


# ---- captions -----------------------------------------------------------------------------

def _thing_phrase(colour: str, shape: str, rng: np.random.Generator, synonyms: bool) -> str:
    c_opts = (colour, *COLOURS[colour][1]) if synonyms else (colour,)
    s_opts = (shape, *SHAPES[shape]) if synonyms else (shape,)
    c, s = c_opts[rng.integers(len(c_opts))], s_opts[rng.integers(len(s_opts))]
    article = "an" if c[0] in "aeiou" else "a"
    return f"{article} {c} {s}"


def make_caption(objects: list[tuple[str, str]], stuff: list[str], rng: np.random.Generator,
                 synonyms: bool = True) -> str:
    """A caption naming every object (``(colour, shape)``) and stuff class, in random order."""
    objs = [objects[i] for i in rng.permutation(len(objects))]
    phrases = [_thing_phrase(c, s, rng, synonyms) for c, s in objs]
    if len(phrases) > 1:
        things = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    else:
        things = phrases[0] if phrases else ""
    places = [_STUFF_PHRASES[n][rng.integers(3)] for n in stuff]
    if not things:
        return " and ".join(n for n in stuff)
    tail = (" " + " and ".join(places)) if places else ""
    lead = ("", "a photo of ", "a picture of ")[rng.integers(3)]
    return f"{lead}{things}{tail}"


# ---- rendering ----------------------------------------------------------------------------

def _stuff_layout(rng: np.random.Generator, s: int) -> tuple[np.ndarray, list[int]]:
    """Stuff label map: one stuff class, or two split by a wavy boundary."""
    names = [_STUFF_NAMES[i] for i in rng.permutation(len(_STUFF_NAMES))[:2]]
    if rng.random() < 0.35:
        return np.full((s, s), STUFF_ID[names[0]], np.uint8), [STUFF_ID[names[0]]]
    if "sky" in names:  # the sky sits on top
        names.sort(key=lambda n: n != "sky")
    y = np.arange(s)[:, None]
    x = np.arange(s)[None, :]
    level = s * rng.uniform(0.3, 0.7) + s * 0.06 * np.sin(x / s * rng.uniform(3, 9) + rng.uniform(0, 6))
    labels = np.where(y < level, STUFF_ID[names[0]], STUFF_ID[names[1]]).astype(np.uint8)
    return labels, [STUFF_ID[n] for n in names]


def render_sample(seed: int, split: str, index: int, size: int = 256,
                  max_objects: int = 4) -> ShapesSample:
    """Render sample ``index`` of ``split``. Training splits label unseen classes 255."""
    rng = _rng(seed, split, index)
    s = int(size)
    sem, stuff_ids = _stuff_layout(rng, s)
    img = np.zeros((s, s, 3), np.float32)
    for sid in stuff_ids:
        tex = _texture(_STUFF_NAMES[sid - NUM_THINGS], rng, s)
        img[sem == sid] = tex[sem == sid]
    sem = sem.copy()

    n_obj = int(rng.integers(1, max_objects + 1))
    masks: list[np.ndarray] = []
    objects: list[tuple[str, str]] = []
    for _ in range(n_obj * 4):  # attempts
        if len(masks) == n_obj:
            break
        colour = _COLOUR_NAMES[rng.integers(len(_COLOUR_NAMES))]
        shape = _SHAPE_NAMES[rng.integers(len(_SHAPE_NAMES))]
        r = s * rng.uniform(0.11, 0.22)
        cx, cy = rng.uniform(r * 0.7, s - r * 0.7, size=2)
        m = _shape_mask(shape, s, cx, cy, r, rng.uniform(0, 2 * math.pi)
                        if shape != "diamond" else rng.uniform(-0.35, 0.35))
        area = m.sum()
        if area < 0.004 * s * s:
            continue
        # Reject placements that would hide more than half of an earlier object.
        if any((pm & m).sum() > 0.5 * pm.sum() for pm in masks):
            continue
        for k in range(len(masks)):
            masks[k] = masks[k] & ~m
        masks.append(m)
        objects.append((colour, shape))
        col = _colour(colour, rng)
        shade = 1.0 + 0.06 * (rng.random((s, s), dtype=np.float32)[m] - 0.5)
        img[m] = col[None, :] * shade[:, None]

    instances = []
    for m, (colour, shape) in zip(masks, objects):
        cid = THING_ID[(colour, shape)]
        sem[m] = cid
        instances.append({"category_id": cid, "mask": m})
    caption = make_caption(objects, [_STUFF_NAMES[i - NUM_THINGS] for i in stuff_ids], rng)
    if split == "train":  # segmentation training never sees unseen classes
        unseen = ~np.asarray(IS_SEEN)[sem]
        sem[unseen] = IGNORE_LABEL
        instances = [d for d in instances if IS_SEEN[d["category_id"]]]
    image = np.clip(img, 0, 255).astype(np.uint8)
    return ShapesSample(image=image, sem_seg=sem, instances=instances, stuff_ids=stuff_ids,
                        caption=caption)


def render_object_crop(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, str, int]:
    """An object-centric image: one large shape on one stuff class, with its caption.

    Returns ``(image HxWx3 uint8, caption, thing class id)``. Drawn from the captions split,
    so it covers every class, unseen ones included (the CLIP pretraining stand-in).
    """
    rng = _rng(seed, "captions", index)
    s = int(size)
    stuff = _STUFF_NAMES[rng.integers(len(_STUFF_NAMES))]
    img = _texture(stuff, rng, s)
    colour = _COLOUR_NAMES[rng.integers(len(_COLOUR_NAMES))]
    shape = _SHAPE_NAMES[rng.integers(len(_SHAPE_NAMES))]
    r = s * rng.uniform(0.25, 0.4)
    cx, cy = s / 2 + rng.uniform(-0.12, 0.12, size=2) * s
    rot = rng.uniform(0, 2 * math.pi) if shape != "diamond" else rng.uniform(-0.35, 0.35)
    m = _shape_mask(shape, s, cx, cy, r, rot)
    img[m] = _colour(colour, rng)[None, :]
    style = rng.random()
    if style < 0.5:
        caption = _thing_phrase(colour, shape, rng, True)
    else:
        caption = make_caption([(colour, shape)], [stuff], rng)
    return np.clip(img, 0, 255).astype(np.uint8), caption, THING_ID[(colour, shape)]


def render_object_region(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, str, int]:
    """One object seen in context: a square around one object of a captions-split scene.

    The scene is rendered at ``2 * size`` (objects as large as in the 128 px segmentation
    scenes), one object is drawn at random, and a square of 1.2-2x its extent around it (shifted
    to stay inside the scene, so neighbours, occluders and stuff show) is resized to ``size``.
    Returns ``(image HxWx3 uint8, caption naming that object only, its thing class id)``.
    """
    s = int(size)
    sample = render_sample(seed, "captions", index, 2 * s)
    rng = np.random.default_rng([int(seed), len(SPLITS), int(index)])
    inst = sample.instances[int(rng.integers(len(sample.instances)))]
    ys, xs = np.nonzero(inst["mask"])
    if len(ys) == 0:  # fully occluded by later objects: fall back to the whole scene
        img, cid = sample.image, int(inst["category_id"])
    else:
        cid = int(inst["category_id"])
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        side = int(min(2 * s, max(8, round(extent * rng.uniform(1.2, 2.0)))))
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        y0 = int(np.clip(round(cy - side / 2), 0, 2 * s - side))
        x0 = int(np.clip(round(cx - side / 2), 0, 2 * s - side))
        img = sample.image[y0:y0 + side, x0:x0 + side]
    img = np.array(Image.fromarray(img).resize((s, s), Image.BILINEAR))
    colour, shape = _COLOUR_NAMES[cid // len(_SHAPE_NAMES)], _SHAPE_NAMES[cid % len(_SHAPE_NAMES)]
    caption = make_caption([(colour, shape)], [], rng)
    return img, caption, cid
