"""Behaviour heads over cached embeddings: token attention pooling → multi-stage dilated TCN → per-frame labels.

The backbone is never in the loop: inputs are the per-frame vectors the embed step cached, either
``(B, T, D)`` frame features or ``(B, T, G, D)`` spatial tokens that a learned attention pools per
frame. A first dilated temporal-convolution stage predicts every frame; each refinement stage reads
the previous stage's probabilities and smooths them over longer context (MS-TCN, Farha & Gall
2019). A boundary head predicts where the behaviour changes.

This module imports torch at the top; import it only inside functions that train or infer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class HeadConfig:
    """Architecture of a behaviour head (saved in the model directory to rebuild it)."""

    input_dim: int
    n_classes: int
    n_tokens: int = 0  # 0: frame features (B, T, D); G > 0: spatial tokens (B, T, G, D)
    width: int = 64
    stages: int = 3
    layers: int = 8
    kernel_size: int = 3
    dropout: float = 0.3
    multilabel: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> HeadConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class HeadOutput(NamedTuple):
    stage_logits: list  # per stage (B, C, T)
    boundary_logits: torch.Tensor  # (B, T)
    features: torch.Tensor  # (B, width, T) of the first stage, for the contrastive term


class TokenAttentionPool(nn.Module):
    """Learned queries attend over a frame's G spatial tokens: (B, T, G, D) → (B, T, D).

    Each head scores a token by its content plus a learned bias for its grid position (the grid
    is of a registered, body-aligned crop, so a position means the same body part in every frame).
    """

    def __init__(self, dim: int, n_tokens: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, heads)
        self.position = nn.Parameter(torch.zeros(n_tokens, heads))

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, G, heads) attention of each head over the G tokens."""
        return torch.softmax(self.score(self.norm(tokens)) + self.position, dim=2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.weights(tokens)
        pooled = torch.einsum("btgh,btgd->bthd", weights, tokens)
        return pooled.mean(dim=2)


class DilatedResidual(nn.Module):
    def __init__(self, width: int, dilation: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(width, width, kernel_size, padding=padding, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.mix(F.relu(self.conv(x))))
        return (x + out) * mask


class TemporalStage(nn.Module):
    """1×1 in-projection, ``layers`` dilated residual convolutions (dilation 1, 2, 4, …), 1×1 to class logits."""

    def __init__(self, in_channels: int, config: HeadConfig) -> None:
        super().__init__()
        self.inp = nn.Conv1d(in_channels, config.width, 1)
        self.blocks = nn.ModuleList(
            DilatedResidual(config.width, 2**i, config.kernel_size, config.dropout) for i in range(config.layers)
        )
        self.out = nn.Conv1d(config.width, config.n_classes, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.inp(x) * mask
        for block in self.blocks:
            features = block(features, mask)
        return self.out(features) * mask, features


class BehaviorHead(nn.Module):
    """Per-frame behaviour classifier over cached embeddings (see module docstring)."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.pool = TokenAttentionPool(config.input_dim, config.n_tokens) if config.n_tokens > 0 else None
        self.norm = nn.LayerNorm(config.input_dim)
        self.input_dropout = nn.Dropout(min(0.5, config.dropout))
        self.stages = nn.ModuleList(
            [TemporalStage(config.input_dim, config)]
            + [TemporalStage(config.n_classes, config) for _ in range(config.stages - 1)]
        )
        self.boundary = nn.Conv1d(config.width, 1, 3, padding=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.config.multilabel else torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> HeadOutput:
        """x (B, T, D) or (B, T, G, D); mask (B, T) of 1 where a frame has data."""
        x = x.float()
        if self.pool is not None:
            x = self.pool(x)
        x = self.input_dropout(self.norm(x)).transpose(1, 2)
        mask = mask.float().unsqueeze(1)
        logits, first_features = self.stages[0](x, mask)
        stage_logits, features = [logits], first_features
        for stage in self.stages[1:]:
            logits, features = stage(self.probabilities(logits) * mask, mask)
            stage_logits.append(logits)
        boundary = self.boundary(features).squeeze(1) * mask.squeeze(1)
        return HeadOutput(stage_logits, boundary, first_features)

    @torch.no_grad()
    def final_logits(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, T) logits of the last stage (inference)."""
        return self.forward(x, mask).stage_logits[-1]


def build_head(config: HeadConfig) -> BehaviorHead:
    return BehaviorHead(config)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
