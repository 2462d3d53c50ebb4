"""The output type of mask generators."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["MaskProposals"]


@dataclass
class MaskProposals:
    """Mask proposals of a batch of B images with Q queries over a vocabulary of C classes.

    Attributes:
        pred_masks: Tensor[B, Q, h, w] mask logits at the mask-feature resolution (stride 4 of
            the input image for PMP: ``h, w = H/4, W/4``).
        pred_logits: Tensor[B, Q, C+1] class logits; index C is the void / no-object class.
        query_embed: Tensor[B, Q, D_emb] L2-normalised query embeddings in CLIP's text space
            (``pred_logits[..., :C] = logit_scale * query_embed @ text_emb.T``).
        aux: one dict per intermediate decoder prediction (deep supervision), each with
            ``"pred_masks"``, ``"pred_logits"`` and ``"query_embed"`` of the shapes above;
            ordered first to last, the final prediction excluded.
    """

    pred_masks: Tensor
    pred_logits: Tensor
    query_embed: Tensor
    aux: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """C, the vocabulary size these logits were computed for."""
        return self.pred_logits.shape[-1] - 1

    def as_dict(self) -> dict:
        """``{"pred_masks", "pred_logits", "query_embed", "aux"}``."""
        return {
            "pred_masks": self.pred_masks,
            "pred_logits": self.pred_logits,
            "query_embed": self.query_embed,
            "aux": self.aux,
        }
