"""A stand-in for the CLIP backbone in classifier tests."""

import torch
from torch import nn


class FakeBackbone(nn.Module):
    """Stands in for the CLIP backbone: only ``dense_to_embedding`` (a Linear) matters here."""

    def __init__(self, dense_dim: int = 12, embed_dim: int = 8) -> None:
        super().__init__()
        self.dense_dim = dense_dim
        self.embed_dim = embed_dim
        self.head = nn.Linear(dense_dim, embed_dim)

    def dense_to_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)
