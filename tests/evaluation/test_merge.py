import math
import pickle

import pytest
import torch

from mmmask.evaluation import InstanceEvaluator, PanopticEvaluator, SemSegEvaluator

from eval_fixtures import IS_THING, NUM_CLASSES, random_case


def _builders():
    return {
        "sem_seg": lambda: SemSegEvaluator(num_classes=NUM_CLASSES, is_seen=[1, 0, 1, 1]),
        "panoptic": lambda: PanopticEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING,
                                              is_seen=[1, 0, 1, 1]),
        "instance": lambda: InstanceEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING,
                                              is_seen=[1, 0, 1, 1]),
    }


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@pytest.mark.parametrize("kind", ["sem_seg", "panoptic", "instance"])
def test_merged_halves_equal_whole_exactly(kind):
    inputs, outputs = random_case(3, n_images=10)
    build = _builders()[kind]
    whole = build()
    whole.process(inputs, outputs)
    odd, even = build(), build()  # interleaved halves: the processing order differs
    odd.process(inputs[1::2], outputs[1::2])
    even.process(inputs[0::2], outputs[0::2])
    merged = build()
    merged.merge([pickle.loads(pickle.dumps(odd.state())), even.state()])
    expected = whole.evaluate()
    assert _same(merged.evaluate(), expected)
    assert expected[{"sem_seg": "mIoU", "panoptic": "PQ", "instance": "AP"}[kind]] > 0
    merged.reset()
    merged.merge([whole.state()])
    assert _same(merged.evaluate(), expected)


def test_reset_forgets():
    inputs, outputs = random_case(4, n_images=2)
    for build in _builders().values():
        ev = build()
        ev.process(inputs, outputs)
        ev.reset()
        fresh = build()
        assert _same(ev.evaluate(), fresh.evaluate()) if not isinstance(ev, InstanceEvaluator) \
            else ev.state() == []


def test_merge_rejects_wrong_shape():
    ev = SemSegEvaluator(num_classes=3)
    with pytest.raises(ValueError):
        ev.merge([torch.zeros(4, 5).numpy()])


def test_dataset_evaluators_state_merge():
    from mmmask.evaluation import DatasetEvaluators

    inputs, outputs = random_case(8, n_images=4)
    build = lambda: DatasetEvaluators([f() for f in _builders().values()])  # noqa: E731
    whole, a, b, merged = build(), build(), build(), build()
    whole.process(inputs, outputs)
    a.process(inputs[:2], outputs[:2])
    b.process(inputs[2:], outputs[2:])
    merged.merge([a.state(), b.state()])
    assert _same(merged.evaluate(), whole.evaluate())
    assert set(whole.evaluate()) == {"sem_seg", "panoptic", "instance"}
