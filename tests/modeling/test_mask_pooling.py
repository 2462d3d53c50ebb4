"""Tests of the mask-pooling baseline classifier and the shared classifier helpers."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmmask.config import get_cfg
from mmmask.modeling.mask_pooling import (
    ClassifierOutput,
    MaskPooling,
    classifier_losses,
    masked_average,
)
from mmmask.registry import MASK_CLASSIFIER_REGISTRY

from fake_backbone import FakeBackbone




def _text(c: int, d: int) -> torch.Tensor:
    return F.normalize(torch.randn(c, d), dim=-1)


@pytest.mark.parametrize("dense_hw", [(8, 8), (14, 14)])
@pytest.mark.parametrize("mask_hw", [(32, 32), (20, 36), (5, 5)])
def test_shapes(dense_hw, mask_hw):
    torch.manual_seed(0)
    bb = FakeBackbone()
    model = MaskPooling(dense_dim=12, embed_dim=8)
    out = model(torch.randn(2, 12, *dense_hw), torch.rand(2, 5, *mask_hw), _text(6, 8), bb)
    assert isinstance(out, ClassifierOutput)
    assert out.logits.shape == (2, 5, 7)
    assert out.embeddings.shape == (2, 5, 8)
    assert out.activation_maps is None
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    assert torch.isfinite(out.logits).all()


def test_built_from_registry_with_cfg():
    cfg = get_cfg()
    cfg.MODEL.MASK_ADAPTER.LOGIT_SCALE = 20.0
    model = MASK_CLASSIFIER_REGISTRY.get("MaskPooling")(cfg, dense_dim=12, embed_dim=8)
    assert isinstance(model, MaskPooling)
    assert math.isclose(model.logit_scale.item(), 20.0, rel_tol=1e-5)


def test_matches_hand_computed_masked_average():
    bb = FakeBackbone(dense_dim=2, embed_dim=2)
    with torch.no_grad():
        bb.head.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        bb.head.bias.zero_()
    dense = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 2.0]]])[None]  # [1,2,2,2]
    mask = torch.tensor([[1.0, 0.5], [0.0, 0.0]])[None, None]  # [1, 1, 2, 2]
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    model = MaskPooling(dense_dim=2, embed_dim=2, logit_scale=10.0, void_logit=-3.0)
    out = model(dense, mask, text, bb)

    # masked average: channel 0: (1*1 + 0.5*2) / 1.5 = 4/3; channel 1: (0 + 0.5*1) / 1.5 = 1/3
    pooled = torch.tensor([4 / 3, 1 / 3])
    emb = torch.tensor([pooled[0], pooled[0] + pooled[1]])  # head: [x0, x0 + x1]
    emb = emb / emb.norm()
    expected = torch.cat([10.0 * text @ emb, torch.tensor([-3.0])])
    assert torch.allclose(out.embeddings[0, 0], emb, atol=1e-4)
    assert torch.allclose(out.logits[0, 0], expected, atol=1e-3)


def test_masked_average_resizes_and_handles_empty():
    dense = torch.arange(16.0).reshape(1, 1, 4, 4)
    full = torch.ones(1, 1, 16, 16)
    assert torch.allclose(masked_average(dense, full)[0, 0], dense.mean().reshape(1), atol=1e-4)
    empty = masked_average(dense, torch.zeros(1, 1, 8, 8))
    assert torch.isfinite(empty).all() and empty.abs().max() == 0
    assert masked_average(dense, torch.zeros(1, 0, 8, 8)).shape == (1, 0, 1)


def test_no_masks_gives_empty_logits():
    model = MaskPooling(dense_dim=12, embed_dim=8)
    out = model(torch.randn(2, 12, 8, 8), torch.rand(2, 0, 16, 16), _text(6, 8), FakeBackbone())
    assert out.logits.shape == (2, 0, 7)


def test_bad_inputs_raise():
    model = MaskPooling(dense_dim=12, embed_dim=8)
    bb = FakeBackbone()
    with pytest.raises(ValueError, match="dense"):
        model(torch.randn(2, 10, 8, 8), torch.rand(2, 3, 8, 8), _text(6, 8), bb)
    with pytest.raises(ValueError, match="masks"):
        model(torch.randn(2, 12, 8, 8), torch.rand(3, 3, 8, 8), _text(6, 8), bb)
    with pytest.raises(ValueError, match="logit_scale"):
        MaskPooling(dense_dim=12, embed_dim=8, logit_scale=0.0)


def test_losses_ignore_and_void():
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 5.0], [9.0, -9.0, 0.0]]])
    logits.requires_grad_(True)
    out = ClassifierOutput(logits=logits, embeddings=F.normalize(torch.randn(1, 3, 4), dim=-1))
    targets = torch.tensor([[0, 2, -1]])  # third mask ignored; index 2 = void
    losses = classifier_losses(out, targets, None, void_weight=1.0)
    expected = F.cross_entropy(logits[0, :2], targets[0, :2])
    assert torch.allclose(losses["loss_adapter_ce"], expected)
    assert losses["loss_consistency"] == 0
    none = classifier_losses(out, torch.full((1, 3), -1), None)
    assert none["loss_adapter_ce"] == 0
    none["loss_adapter_ce"].backward()  # still attached to the graph
    with pytest.raises(ValueError, match="targets_classes"):
        classifier_losses(out, torch.tensor([[0, 3, 0]]), None)


def test_pooling_losses_train_scale_and_void():
    torch.manual_seed(0)
    model = MaskPooling(dense_dim=12, embed_dim=8)
    out = model(torch.randn(1, 12, 8, 8), torch.rand(1, 4, 8, 8), _text(3, 8), FakeBackbone())
    losses = model.losses(out, torch.tensor([[0, 1, 3, -1]]))
    assert set(losses) == {"loss_pooling_ce", "loss_consistency"}
    sum(losses.values()).backward()
    assert model.void_logit.grad is not None and model.void_logit.grad != 0
    assert model.log_logit_scale.grad is not None
