"""Pure helpers mapping a pixel region onto the image-token grid and into CM3 spans."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["box_to_mask", "mask_to_cells", "cells_to_spans"]


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """XYXY pixel box -> bool HxW mask (pixels whose centre lies inside; clipped to the image)."""
    if len(box) != 4:
        raise ValueError(f"A box is 4 numbers x0,y0,x1,y1; got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"Empty box {box!r}: need x1 > x0 and y1 > y0")
    ys = np.arange(height)[:, None] + 0.5
    xs = np.arange(width)[None, :] + 0.5
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


def mask_to_cells(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool HxW pixel mask -> bool Tensor-like ``grid`` (h, w): a cell is selected when any pixel
    of the mask falls in it. Cell ``(i, j)`` covers rows ``[i*H/h, (i+1)*H/h)`` (likewise cols)."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"Region mask must be HxW; got shape {m.shape}")
    gh, gw = grid
    H, W = m.shape
    rows = np.minimum((np.arange(H) * gh) // H, gh - 1)  # cell row of each pixel row
    cols = np.minimum((np.arange(W) * gw) // W, gw - 1)
    cells = np.zeros((gh, gw), dtype=bool)
    ys, xs = np.nonzero(m)
    cells[rows[ys], cols[xs]] = True
    return cells


def cells_to_spans(cells: np.ndarray, max_spans: int) -> list[tuple[int, int]]:
    """Row-major runs of selected cells as ``[start, end)`` token spans, at most ``max_spans``.

    When there are more runs than ``max_spans``, the runs separated by the smallest gaps are
    merged (the merged span also regenerates the unselected cells between them).
    """
    if max_spans < 1:
        raise ValueError(f"max_spans must be >= 1; got {max_spans}")
    flat = np.asarray(cells).astype(bool).reshape(-1)
    spans: list[list[int]] = []
    for i, on in enumerate(flat):
        if on:
            if spans and spans[-1][1] == i:
                spans[-1][1] = i + 1
            else:
                spans.append([i, i + 1])
    while len(spans) > max_spans:
        gaps = [spans[k + 1][0] - spans[k][1] for k in range(len(spans) - 1)]
        k = int(np.argmin(gaps))
        spans[k] = [spans[k][0], spans[k + 1][1]]
        del spans[k + 1]
    return [(s, e) for s, e in spans]
