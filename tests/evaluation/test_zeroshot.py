"""Zero-shot naming figures: object crops / regions for a CLIP, ground-truth masks for a predictor."""

import numpy as np
import pytest

from mmmask.data import shapes
from mmmask.evaluation.zeroshot import shapes_mask_naming, shapes_zero_shot


class _Namer:
    """Names a mask by the class that covers most of it in the scene it was given (an oracle),
    except that it calls every unseen thing "red star"."""

    def __init__(self, scenes):
        self.scenes = scenes
        self.calls = 0

    def classify_masks(self, image, masks, vocab):
        s = self.scenes[self.calls]
        self.calls += 1
        assert np.array_equal(image, s.image) and len(vocab.classes) == len(shapes.CLASS_NAMES)
        probs = np.zeros((len(masks), len(vocab.classes)), np.float32)
        for q, m in enumerate(masks):
            ids, counts = np.unique(s.sem_seg[m], return_counts=True)
            c = int(ids[counts.argmax()])
            unseen_thing = c < shapes.NUM_THINGS and not shapes.IS_SEEN[c]
            probs[q, shapes.CLASS_NAMES.index("red star") if unseen_thing else c] = 1
        return probs, vocab.labels


def test_mask_naming_counts_every_ground_truth_segment():
    scenes = [shapes.render_sample(0, "val", i, 48) for i in range(6)]
    out = shapes_mask_naming(_Namer(scenes), num_images=6, size=48)
    n = sum(len([d for d in s.instances if d["mask"].any()]) +
            sum(1 for c in np.unique(s.sem_seg) if c >= shapes.NUM_THINGS) for s in scenes)
    assert out["num_segments"] == n
    assert out["stuff"] == 100.0 and out["things_seen"] == 100.0
    assert any(not shapes.IS_SEEN[d["category_id"]] for s in scenes for d in s.instances)
    assert out["things_unseen"] == 0.0
    # every unseen thing was called "red star": the errors say which half of the name was wrong
    wrong = [shapes.CLASS_NAMES[d["category_id"]].split(" ", 1) for s in scenes
             for d in s.instances if d["mask"].any() and not shapes.IS_SEEN[d["category_id"]]]
    err = out["thing_errors"]
    assert err["stuff"] == 0
    assert err["colour"] == sum(c != "red" and sh == "star" for c, sh in wrong)
    assert err["shape"] == sum(c == "red" and sh != "star" for c, sh in wrong)
    assert err["both"] == sum(c != "red" and sh != "star" for c, sh in wrong)
    assert all(k.endswith(" -> star") for k in err["shape_mix_ups"])
    assert sum(err["shape_mix_ups"].values()) <= err["shape"] + err["both"]


class _NamerWithText(_Namer):
    """The oracle above plus a text side where a name is colour one-hot + shape one-hot: two
    names of one colour and different shapes have cosine 1/2."""

    def encode_text(self, vocab):
        colours, shape_names = list(shapes.COLOURS), list(shapes.SHAPES)
        emb = np.zeros((len(vocab.classes), len(colours) + len(shape_names)), np.float32)
        for i, name in enumerate(shapes.CLASS_NAMES[: shapes.NUM_THINGS]):
            c, sh = name.split(" ", 1)
            emb[i, colours.index(c)] = emb[i, len(colours) + shape_names.index(sh)] = 2 ** -0.5
        return emb, vocab.labels


def test_mask_naming_reports_the_text_cosine_of_each_shape_mix_up():
    scenes = [shapes.render_sample(0, "val", i, 48) for i in range(6)]
    out = shapes_mask_naming(_NamerWithText(scenes), num_images=6, size=48)
    mix_ups = out["thing_errors"]["shape_mix_ups"]
    assert mix_ups and set(out["shape_text_cosine"]) == set(mix_ups)
    assert all(v == pytest.approx(0.5) for v in out["shape_text_cosine"].values())
    assert "shape_text_cosine" not in shapes_mask_naming(_Namer(scenes), num_images=6, size=48)


def test_predictor_text_side_is_one_unit_vector_per_class_with_synonyms_averaged():
    from mmmask.predictor import SegmentationPredictor

    pred = SegmentationPredictor.from_files(None)
    emb, labels = pred.encode_text("red circle,sky,blue star")
    assert emb.shape[0] == len(labels) == 3
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] < 0.9  # far apart, so the mean below differs from either name
    both, _ = pred.encode_text("red circle|sky")  # one class, two (odd) synonyms
    mean = emb[0] + emb[1]
    np.testing.assert_allclose(both[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_predictor_text_side_of_the_crops_uses_their_own_text_tower():
    import torch

    from mmmask.predictor import SegmentationPredictor

    pred = SegmentationPredictor.from_files(None, None, ["MODEL.MASK_CROP.OWN_TEXT_TOWER", "True"])
    vocab = "red circle,red hexagon,sky"
    backbone, _ = pred.encode_text(vocab)
    with torch.no_grad():  # a crop text tower that no longer equals the backbone's
        for p in pred.model.crop_classifier.text_tower.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pred.model.crop_classifier.text_tower.clear_cache()
    crops, _ = pred.encode_text(vocab, crops=True)
    np.testing.assert_allclose(np.linalg.norm(crops, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(crops, backbone, atol=1e-3)
    np.testing.assert_allclose(pred.encode_text(vocab)[0], backbone, atol=1e-6)


@pytest.mark.parametrize("kind", ["crop", "region"])
def test_zero_shot_kinds_on_a_random_clip(kind):
    from mmmask.modeling.clip import CLIPBackbone

    out = shapes_zero_shot(CLIPBackbone(model_name="mmmask-shapes-convnext").eval(),
                           num_images=20, batch_size=10, kind=kind)
    assert out["kind"] == kind and out["num_images"] == 20
    assert 0 <= out["accuracy"] <= 100 and 0 <= out["shape_accuracy"] <= 100
    with pytest.raises(ValueError, match="region"):
        shapes_zero_shot(None, kind="scene")
