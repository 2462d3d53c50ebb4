"""Tests of Mask-Adapter, IoU matching and the mask consistency loss."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmmask.config import get_cfg
from mmmask.modeling.iou_matching import (
    build_adapter_targets,
    collate_adapter_targets,
    consistency_loss,
    iou_match,
    mask_iou,
)
from mmmask.modeling.mask_adapter import MaskAdapter
from mmmask.registry import MASK_CLASSIFIER_REGISTRY

from fake_backbone import FakeBackbone




def _adapter(**kw) -> MaskAdapter:
    args = dict(dense_dim=12, embed_dim=8, hidden_dim=16, num_blocks=1, num_maps=4)
    args.update(kw)
    return MaskAdapter(**args)


def _text(c: int, d: int) -> torch.Tensor:
    return F.normalize(torch.randn(c, d), dim=-1)


# ---- forward ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dense_hw", [(8, 8), (14, 14)])  # ConvNeXt-like and ViT-like grids
@pytest.mark.parametrize("mask_hw", [(32, 32), (25, 41), (6, 6)])
def test_shapes(dense_hw, mask_hw):
    torch.manual_seed(0)
    model = _adapter()
    dense, masks = torch.randn(2, 12, *dense_hw), torch.rand(2, 5, *mask_hw)
    out = model(dense, masks, _text(6, 8), FakeBackbone())
    assert out.logits.shape == (2, 5, 7)
    assert out.embeddings.shape == (2, 5, 8)
    assert out.activation_maps.shape == (2, 5, 4, *dense_hw)
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    sums = out.activation_maps.flatten(3).sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_built_from_registry_with_cfg():
    cfg = get_cfg()
    cfg.MODEL.MASK_ADAPTER.HIDDEN_DIM = 16
    cfg.MODEL.MASK_ADAPTER.NUM_MAPS = 3
    cfg.MODEL.MASK_ADAPTER.NUM_BLOCKS = 1
    model = MASK_CLASSIFIER_REGISTRY.get("MaskAdapter")(cfg, dense_dim=12, embed_dim=8)
    assert isinstance(model, MaskAdapter) and model.num_maps == 3
    assert model.iou_threshold == cfg.MODEL.MASK_ADAPTER.IOU_THRESHOLD
    out = model(torch.randn(1, 12, 8, 8), torch.rand(1, 2, 32, 32), _text(4, 8), FakeBackbone())
    assert out.activation_maps.shape == (1, 2, 3, 8, 8)


@pytest.mark.parametrize("downsample", [1, 2, 8])
def test_other_mask_downsample(downsample):
    model = _adapter(mask_downsample=downsample)
    out = model(torch.randn(1, 12, 7, 9), torch.rand(1, 3, 30, 30), _text(2, 8), FakeBackbone())
    assert out.logits.shape == (1, 3, 3)
    assert out.activation_maps.shape == (1, 3, 4, 7, 9)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="power of two"):
        _adapter(mask_downsample=3)
    with pytest.raises(ValueError, match="gt"):
        _adapter(train_masks="pred")
    model = _adapter()
    with pytest.raises(ValueError, match="dense"):
        model(torch.randn(1, 5, 8, 8), torch.rand(1, 3, 8, 8), _text(2, 8), FakeBackbone())


def test_no_masks():
    dense, masks = torch.randn(2, 12, 8, 8), torch.rand(2, 0, 16, 16)
    out = _adapter()(dense, masks, _text(6, 8), FakeBackbone())
    assert out.logits.shape == (2, 0, 7) and out.activation_maps.shape == (2, 0, 4, 8, 8)


def test_chunked_equals_unchunked():
    torch.manual_seed(0)
    whole = _adapter(chunk_size=0).eval()
    chunked = _adapter(chunk_size=3).eval()
    chunked.load_state_dict(whole.state_dict())
    bb, text = FakeBackbone(), _text(6, 8)
    dense, masks = torch.randn(2, 12, 8, 8), torch.rand(2, 5, 32, 32)
    a, b = whole(dense, masks, text, bb), chunked(dense, masks, text, bb)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.activation_maps, b.activation_maps, atol=1e-6)


def test_masks_change_the_embedding():
    torch.manual_seed(0)
    model, bb = _adapter(), FakeBackbone()
    dense = torch.randn(1, 12, 8, 8)
    left, right = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    left[..., :16], right[..., 16:] = 1, 1
    out = model(dense, torch.cat([left, right], 1), _text(3, 8), bb)
    assert not torch.allclose(out.embeddings[0, 0], out.embeddings[0, 1], atol=1e-4)


# ---- IoU matching ----------------------------------------------------------------------------


def _box(x0, y0, x1, y1, size=10):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_known_values():
    gt = torch.stack([_box(0, 0, 4, 4), _box(5, 5, 10, 10)])
    empty = torch.zeros(10, 10, dtype=torch.bool)
    pred = torch.stack([_box(0, 0, 4, 4), _box(0, 0, 4, 2), _box(2, 0, 6, 4), empty])
    iou = mask_iou(pred.flatten(1), gt.flatten(1))
    expected = torch.tensor([[1.0, 0.0], [0.5, 0.0], [8 / 24, 0.0], [0.0, 0.0]])
    assert torch.allclose(iou, expected, atol=1e-6)
    soft = mask_iou(torch.full((1, 4), 0.5), torch.ones(1, 4))  # soft IoU of float masks
    assert torch.allclose(soft, torch.tensor([[0.5]]))
    with pytest.raises(ValueError):
        mask_iou(torch.ones(2, 4), torch.ones(2, 5))


def test_iou_match_threshold_is_inclusive_and_not_hungarian():
    gt = torch.stack([_box(0, 0, 4, 4), _box(5, 5, 10, 10)])
    pred = torch.stack([_box(0, 0, 4, 4), _box(0, 0, 4, 2), _box(2, 0, 6, 4), _box(5, 5, 10, 9)])
    matched, ious = iou_match(pred, gt, threshold=0.5)
    assert matched.tolist() == [0, 0, -1, 1]  # two predictions share GT 0; IoU 0.5 counts
    assert ious.shape == (4, 2)
    matched, _ = iou_match(pred, gt, threshold=0.51)
    assert matched.tolist() == [0, -1, -1, 1]
    matched, _ = iou_match(pred, gt, threshold=0.3)
    assert matched.tolist() == [0, 0, 0, 1]


def test_iou_match_probabilities_at_other_resolution():
    gt = _box(0, 0, 8, 8, size=16)[None]  # top-left quarter of a 16x16 image
    pred = torch.zeros(1, 4, 4)
    pred[0, :2, :2] = 0.9  # same region at a quarter of the resolution
    matched, ious = iou_match(pred, gt, threshold=0.7)
    assert matched.tolist() == [0] and ious[0, 0] > 0.7


def test_iou_match_empty_inputs():
    gt = torch.stack([_box(0, 0, 4, 4)])
    matched, ious = iou_match(torch.zeros(0, 10, 10), gt, 0.5)
    assert matched.shape == (0,) and ious.shape == (0, 1)
    matched, ious = iou_match(torch.stack([_box(0, 0, 4, 4)]), torch.zeros(0, 10, 10), 0.5)
    assert matched.tolist() == [-1] and ious.shape == (1, 0)


def test_build_targets_gt_mode():
    gt = torch.stack([_box(0, 0, 4, 4), _box(5, 5, 10, 10)])
    masks, classes, groups = build_adapter_targets(None, gt, torch.tensor([3, 1]), 0.5, "gt")
    assert masks.shape == (2, 10, 10) and masks.dtype == torch.float32
    assert classes.tolist() == [3, 1] and groups.tolist() == [0, 1]


def test_build_targets_mixed_mode():
    gt = torch.stack([_box(0, 0, 4, 4), _box(5, 5, 10, 10)])
    pred = torch.stack([_box(7, 0, 10, 3), _box(0, 0, 4, 4), _box(5, 5, 10, 9)]).float()
    pred.requires_grad_(True)
    masks, classes, groups = build_adapter_targets(
        pred, gt, torch.tensor([3, 1]), 0.7, "mixed", num_pred=16, unmatched_label=5
    )
    assert masks.shape == (5, 10, 10) and not masks.requires_grad
    # GT first, then predictions by decreasing best IoU: pred 1 (1.0), pred 2 (0.8), pred 0 (0)
    assert classes.tolist() == [3, 1, 3, 1, 5]
    assert groups.tolist() == [0, 1, 0, 1, -1]
    assert torch.equal(masks[2], pred[1].detach())
    _, classes, groups = build_adapter_targets(pred, gt, torch.tensor([3, 1]), 0.7, "mixed", 1)
    assert classes.tolist() == [3, 1, 3] and groups.tolist() == [0, 1, 0]
    _, classes, groups = build_adapter_targets(
        pred, gt[:0], torch.tensor([], dtype=torch.long), 0.7, "mixed", 2
    )
    assert classes.tolist() == [-1, -1] and groups.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="mixed"):
        build_adapter_targets(pred, gt, torch.tensor([3, 1]), 0.7, "pred")


def test_collate_targets_pads():
    a = (torch.ones(2, 4, 4), torch.tensor([1, 2]), torch.tensor([0, 1]))
    b = (torch.ones(0, 4, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    masks, classes, groups = collate_adapter_targets([a, b])
    assert masks.shape == (2, 2, 4, 4) and masks[1].abs().sum() == 0
    assert classes.tolist() == [[1, 2], [-1, -1]] and groups.tolist() == [[0, 1], [-1, -1]]


# ---- consistency loss ------------------------------------------------------------------------


def test_consistency_zero_when_identical_positive_otherwise():
    e = F.normalize(torch.randn(1, 4), dim=-1)
    same = e.expand(3, 4)[None]  # [1, 3, 4]
    groups = torch.tensor([[0, 0, 0]])
    assert consistency_loss(same, groups).abs() < 1e-6
    different = F.normalize(torch.randn(1, 3, 4), dim=-1)
    assert consistency_loss(different, groups) > 1e-3
    # singletons and ungrouped masks contribute nothing
    assert consistency_loss(different, torch.tensor([[0, 1, -1]])) == 0
    # the same id in two images names two groups of one member each
    assert consistency_loss(different[:, :2].reshape(2, 1, 4), torch.tensor([[0], [0]])) == 0


def test_consistency_loss_trains_adapter():
    torch.manual_seed(0)
    model, bb = _adapter(), FakeBackbone()
    masks = torch.rand(2, 5, 32, 32)
    out = model(torch.randn(2, 12, 8, 8), masks, _text(6, 8), bb)
    groups = torch.tensor([[0, 0, 1, 1, -1], [0, 0, 0, -1, -1]])
    losses = model.losses(out, torch.tensor([[1, 1, 2, 2, 6], [0, 0, 0, -1, -1]]), groups)
    assert set(losses) == {"loss_adapter_ce", "loss_consistency"}
    assert losses["loss_consistency"] > 0
    losses["loss_consistency"].backward()
    grads = [p.grad for p in model.to_maps.parameters()] + [model.mask_stem[0].weight.grad]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


# ---- learning --------------------------------------------------------------------------------


def _synthetic_batch(gen, protos, batch=4, res=32, hw=8, noise=0.3):
    """Dense maps of noise where each mask's region is filled with its class prototype."""
    c, d = protos.shape
    dense = torch.randn(batch, d, hw, hw, generator=gen)
    masks = torch.zeros(batch, 3, res, res)
    classes = torch.randint(0, c, (batch, 3), generator=gen)
    scale = res // hw
    for b in range(batch):
        for q in range(3):  # one region per quadrant: regions never overlap
            size = int(torch.randint(2, 4, (1,), generator=gen))
            x0 = (q % 2) * 4 + int(torch.randint(0, 5 - size, (1,), generator=gen))
            y0 = (q // 2) * 4 + int(torch.randint(0, 5 - size, (1,), generator=gen))
            fill = protos[classes[b, q]] + noise * torch.randn(d, generator=gen)
            dense[b, :, y0 : y0 + size, x0 : x0 + size] = fill[:, None, None]
            masks[b, q, y0 * scale : (y0 + size) * scale, x0 * scale : (x0 + size) * scale] = 1
    return dense, masks, classes


@pytest.fixture
def one_thread():
    """Many tiny ops: one intra-op thread is far faster than several on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_adapter_learns_synthetic_task(one_thread):
    torch.manual_seed(0)
    num_classes, dense_dim, embed_dim = 4, 16, 8
    bb = FakeBackbone(dense_dim, embed_dim).requires_grad_(False)
    protos = 2 * torch.randn(num_classes, dense_dim)
    text = F.normalize(bb.dense_to_embedding(protos), dim=-1)
    model = MaskAdapter(
        dense_dim=dense_dim,
        embed_dim=embed_dim,
        hidden_dim=16,
        num_blocks=1,
        num_maps=4,
        logit_scale=10.0,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    test = _synthetic_batch(torch.Generator().manual_seed(99), protos, batch=16)

    def evaluate():
        with torch.no_grad():
            out = model(test[0], test[1], text, bb)
            ce = model.losses(out, test[2])["loss_adapter_ce"].item()
            acc = (out.logits[..., :num_classes].argmax(-1) == test[2]).float().mean().item()
        return ce, acc

    ce_before, _ = evaluate()
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        dense, masks, classes = _synthetic_batch(gen, protos)
        loss = sum(model.losses(model(dense, masks, text, bb), classes).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    ce_after, acc_after = evaluate()
    assert ce_after < 0.5 * ce_before
    assert acc_after >= 0.9
