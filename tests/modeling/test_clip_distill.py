"""Region self-distillation of CLIP's dense map (CLIPDenseDistiller)."""

import torch

from mmmask.data.shapes import render_sample
from mmmask.modeling.clip import CLIPDenseDistiller, grid_boxes


def test_grid_boxes_tile_the_image():
    b = grid_boxes(60, 90, 2, 3)
    assert b.shape == (6, 4)
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()
    assert torch.isclose(area, torch.tensor(60.0 * 90))
    assert torch.equal(b[0], torch.tensor([0.0, 0.0, 30.0, 30.0]))


def test_distiller_trains_the_image_tower_only_and_lowers_its_loss():
    torch.manual_seed(0)
    m = CLIPDenseDistiller(model_name="mmmask-shapes-convnext", crop_size=32, max_grid=2)
    assert all(k.startswith("clip.") for k in m.state_dict())  # the teacher is not saved
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("clip.visual.") for n in trainable)
    teacher_before = [p.clone() for p in m.teacher.parameters()]
    batch = [{"image": torch.from_numpy(render_sample(0, "captions", i, 64).image).permute(2, 0, 1)}
             for i in range(2)]
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        torch.manual_seed(1)  # the same grids each step
        loss = m(batch)["loss_distill"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    for a, b in zip(teacher_before, m.teacher.parameters()):
        assert torch.equal(a, b)
