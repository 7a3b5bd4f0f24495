"""Multi-head attention, shared by the tiny-CLIP text transformer and the UNet.

Self-attention when no context is given; cross-attention otherwise, with queries from x and
keys/values from the context (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", Sec. 3.3). The projections are named modules (to_q, to_k, to_v, to_out) because
customization methods act on them: Custom Diffusion trains the cross-attention to_k/to_v, LoRA wraps
them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        context_dim = context_dim or dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x (B, N, dim), context (B, M, context_dim) or None -> (B, N, dim).

        softmax(Q K^T / sqrt(d_head)) V per head, Q = x W_q, K = c W_k, V = c W_v.
        """
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, n, dim = q.shape
        # (B, L, dim) -> (B, heads, L, dim/heads), L = N for q, M for k and v
        q, k, v = (t.reshape(b, t.shape[1], self.heads, dim // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, heads, N, dim/heads)
        return self.to_out(out.transpose(1, 2).reshape(b, n, dim))       # heads joined: (B, N, dim)
