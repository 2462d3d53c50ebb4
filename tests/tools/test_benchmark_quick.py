"""The benchmark at tiny sizes: every figure is produced (no timing asserts)."""

import dataclasses
import json
import math

import pytest

from mmmask.utils.benchmark import QUICK, SECTIONS, format_table, run_benchmark, time_side_by_side

TINY = dataclasses.replace(
    QUICK, sizes=(64,), num_masks=8, top_n=4, crop_size=64, sam_size=64,
    sam_opts=tuple(list(QUICK.sam_opts[:2]) + ["MODEL.SAM.IMAGE_SIZE", 64]
                   + list(QUICK.sam_opts[4:]) + ["MODEL.SAM.POINTS_PER_SIDE", 2]),
    cm3=dict(n_layer=1, n_head=1, n_embd=16, block_size=300, vocab_size=64),
    eval_size=32, memory_size=64, shipped_images=1, repeats=1, warmup=0)


def test_every_section_gives_its_figures():
    lines = []
    report = run_benchmark(plan=TINY, device="cpu", progress=lines.append)
    assert set(report["results"]) == set(SECTIONS)
    names = " ".join(f["figure"] for f in report["figures"])
    for part in ("pipeline / CLIP trunk, convnext", "pipeline / CLIP trunk, vit",
                 "Mask-Adapter share", "top 4 masks", "masks refined", "SUBSAMPLE 2",
                 "crop-and-classify", "MaskCrop fusion",
                 "SAM automatic",
                 "naming", "CM3 KV cache / recompute", "text: padded-77 / truncated",
                 "max |padded - truncated|", "mIoU accumulation", "peak memory",
                 "shipped Shapes-OV model / the same without its neck cut"):
        assert part in names, part
    for f in report["figures"]:
        assert isinstance(f["value"], float) and not math.isnan(f["value"]), f
    assert report["results"]["cm3"]["same_tokens_first_32"]
    assert report["results"]["sam"]["same_masks_as_official"]
    assert report["results"]["text"]["max_abs_diff"] < 1e-4
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["torch"]
    json.dumps(report, default=str)  # JSON-ready
    table = format_table(report)
    assert table.count("\n") == len(report["figures"]) + 1
    assert any("done" in line for line in lines)


def test_bad_input():
    with pytest.raises(ValueError, match="valid"):
        run_benchmark(plan=TINY, sections=("pipeline", "nope"))
    with pytest.raises(ValueError, match="repeats"):
        time_side_by_side({"a": lambda: None}, repeats=0)
