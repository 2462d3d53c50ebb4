import math

import numpy as np
import pytest
import torch

from mmmask.evaluation import attribute_accuracy, caption_mentions, codebook_usage, psnr


def test_psnr_known_values():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    x = torch.zeros(3, 8, 8)
    y = torch.full((3, 8, 8), 0.1)
    assert psnr(x, y) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError):
        psnr(a, b[:2])


def test_codebook_usage():
    frac, ppl = codebook_usage(torch.tensor([[0, 0], [1, 1]]), 4)
    assert frac == 0.5 and ppl == pytest.approx(2.0)
    frac, ppl = codebook_usage(np.arange(8), 8)
    assert frac == 1.0 and ppl == pytest.approx(8.0)
    assert codebook_usage([3, 3, 3], 16) == (1 / 16, pytest.approx(1.0))
    with pytest.raises(ValueError):
        codebook_usage([0, 16], 16)


def test_attribute_accuracy_with_synonyms_and_whole_words():
    captions = ["a red star and a violet donut on grass", "a picture of a blue circle",
                "an orange starfish in the sea"]
    expected = [[("red", "star"), ("purple", "ring")], [("blue", "square")],
                [("orange", "star")]]
    assert attribute_accuracy(captions, expected) == pytest.approx(2 / 4)
    assert caption_mentions("A Red  Star on sand", "red", "star")
    assert not caption_mentions("a red star", "red", "cross")
    assert attribute_accuracy(["a red x"], [[("red", "x")]], synonyms={}) == 1.0
    with pytest.raises(ValueError):
        attribute_accuracy(["a"], [])
    with pytest.raises(ValueError):
        attribute_accuracy(["a"], [[]])


def test_attribute_accuracy_halves():
    captions = ["a red star and a violet square on grass", "a blue circle"]
    expected = [[("red", "star"), ("purple", "ring")], [("green", "circle")]]
    # both words: only the red star; colours: red, violet; shapes: star, circle
    assert attribute_accuracy(captions, expected) == pytest.approx(1 / 3)
    assert attribute_accuracy(captions, expected, part="colour") == pytest.approx(2 / 3)
    assert attribute_accuracy(captions, expected, part="shape") == pytest.approx(2 / 3)
    assert caption_mentions("a red donut", None, "ring")
    assert not caption_mentions("a redstar", "red", None)  # whole words
    with pytest.raises(ValueError, match="part"):
        attribute_accuracy(captions, expected, part="size")
    with pytest.raises(ValueError):
        caption_mentions("a red star", None, None)


def test_attribute_accuracy_on_shapes_captions():
    from mmmask.data.shapes import make_caption

    rng = np.random.default_rng(0)
    objects = [("purple", "ring"), ("white", "cross"), ("green", "diamond")]
    captions = [make_caption(objects, ["grass"], rng) for _ in range(20)]
    assert attribute_accuracy(captions, [objects] * 20) == 1.0
