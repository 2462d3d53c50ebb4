import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mmmask.evaluation import (DatasetEvaluator, DatasetEvaluators, PanopticEvaluator,
                               SemSegEvaluator, inference_on_dataset)

from eval_fixtures import IS_THING, NUM_CLASSES, random_case


class _Recorder(torch.nn.Module):
    def __init__(self, outputs):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.outputs = list(outputs)
        self.modes = []

    def forward(self, batch):
        self.modes.append((self.training, torch.is_grad_enabled()))
        return [self.outputs.pop(0) for _ in batch]


def test_inference_on_dataset_eval_mode_no_grad_and_restores():
    inputs, outputs = random_case(5, n_images=4)
    model = _Recorder(outputs)
    model.train()
    loader = [inputs[:2], inputs[2:]]
    evs = [SemSegEvaluator(num_classes=NUM_CLASSES),
           PanopticEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING)]
    res = inference_on_dataset(model, loader, evs, progress=False)
    assert model.modes == [(False, False), (False, False)]
    assert model.training
    assert set(res) == {"sem_seg", "panoptic"}
    ref = SemSegEvaluator(num_classes=NUM_CLASSES)
    ref.process(inputs, random_case(5, n_images=4)[1])
    assert res["sem_seg"]["mIoU"] == ref.evaluate()["mIoU"]


def test_callable_and_length_mismatch():
    inputs, outputs = random_case(6, n_images=2)
    res = inference_on_dataset(lambda b: outputs[: len(b)], [inputs], None, progress=False)
    assert res == {}
    with pytest.raises(ValueError, match="outputs"):
        inference_on_dataset(lambda b: [], [inputs], SemSegEvaluator(num_classes=4),
                             progress=False)


def test_evaluators_need_distinct_names():
    with pytest.raises(ValueError):
        DatasetEvaluators([SemSegEvaluator(num_classes=2), SemSegEvaluator(num_classes=2)])
    with pytest.raises(NotImplementedError):
        DatasetEvaluator().evaluate()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        inputs, outputs = random_case(7, n_images=6)
        ev = DatasetEvaluators([
            SemSegEvaluator(num_classes=NUM_CLASSES),
            PanopticEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING)])
        ev.process(inputs[rank::world], outputs[rank::world])
        queue.put((rank, ev.evaluate()))
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_gather_rank0_only():
    ctx = mp.get_context("fork")  # fork: no re-import of torch in the workers (fast)
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(2, _free_port(), queue), nprocs=2, start_method="fork")
    got = dict(queue.get() for _ in range(2))
    assert got[1] == {}
    inputs, outputs = random_case(7, n_images=6)
    ref = DatasetEvaluators([SemSegEvaluator(num_classes=NUM_CLASSES),
                             PanopticEvaluator(num_classes=NUM_CLASSES, is_thing=IS_THING)])
    ref.process(inputs, outputs)
    assert got[0] == ref.evaluate()
