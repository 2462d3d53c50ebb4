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


@pytest.mark.parametrize("kind", ["crop", "region"])
def test_zero_shot_kinds_on_a_random_clip(kind):
    from mmmask.modeling.clip import CLIPBackbone

    out = shapes_zero_shot(CLIPBackbone(model_name="mmmask-shapes-convnext").eval(),
                           num_images=20, batch_size=10, kind=kind)
    assert out["kind"] == kind and out["num_images"] == 20
    assert 0 <= out["accuracy"] <= 100 and 0 <= out["shape_accuracy"] <= 100
    with pytest.raises(ValueError, match="region"):
        shapes_zero_shot(None, kind="scene")
