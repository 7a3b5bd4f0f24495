"""Tiny CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision").

A text transformer and a small CNN image encoder map captions and images into one embedding space,
trained with the symmetric InfoNCE loss (Sec. 2.3, Fig. 3) and a learned temperature. Zero-shot
classification compares an image's embedding with the embeddings of class prompts.

For the diffusion model, the text transformer's per-token states are the conditioning the UNet
cross-attends to, as CLIP's conditions Stable Diffusion: `encode_text` returns both those states
(B, L, width) and the pooled, projected embedding (B, embed_dim).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.config import ClipConfig
from minidiff.attention import Attention
from minidiff.tokenizer import EOS


class TextBlock(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads=heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), causal=True)
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    """Causal transformer over token ids; pooled output is the state at the <eos> token
    (as in CLIP)."""

    def __init__(self, vocab_size: int, cfg: ClipConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        self.position_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        self.blocks = nn.ModuleList(TextBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.width)
        self.projection = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def embed_tokens(self, tokens: torch.Tensor,
                     override: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L) ids -> (B, L, width); `override` replaces the embedding of given ids (textual
        inversion)."""
        x = self.token_embedding(tokens)                                # (B, L, width)
        for token_id, vector in (override or {}).items():
            # mask (B, L, 1) picks the vector (width,) or (B, 1, width) where the id occurs
            x = torch.where((tokens == token_id)[..., None], vector.to(x.dtype), x)
        return x

    def forward(self, tokens: torch.Tensor, override: dict[int, torch.Tensor] | None = None):
        """(B, L) ids -> token states (B, L, width), pooled embedding (B, embed_dim)."""
        x = self.embed_tokens(tokens, override) + self.position_embedding  # + (L, width)
        for block in self.blocks:
            x = block(x)
        states = self.ln_final(x)                                       # (B, L, width)
        eos_position = (tokens == EOS).int().argmax(dim=1)              # (B,): the first <eos>
        # one state per caption, the one at its <eos>: under causal attention, the first position
        # that has read the whole caption
        pooled = states[torch.arange(len(tokens), device=tokens.device), eos_position]  # (B, width)
        return states, self.projection(pooled)                          # and (B, embed_dim)


class ImageEncoder(nn.Module):
    """Small CNN: per stage two 3x3 conv-BN-ReLU layers, 2x average pooling between stages, global
    pool."""

    def __init__(self, channels: tuple[int, ...], embed_dim: int):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(channels):
            if i > 0:
                layers.append(nn.AvgPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
                c_in = c
        self.features = nn.Sequential(*layers)
        self.projection = nn.Linear(c_in, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, embed_dim)."""
        # global average pool (B, C, h, w) -> (B, C), then -> (B, embed_dim)
        return self.projection(self.features(x).mean(dim=(2, 3)))


class TinyClip(nn.Module):
    def __init__(self, vocab_size: int, cfg: ClipConfig):
        super().__init__()
        self.text = TextEncoder(vocab_size, cfg)
        self.image = ImageEncoder(cfg.image_channels, cfg.embed_dim)
        # CLIP's initial temperature
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, tokens: torch.Tensor, override: dict[int, torch.Tensor] | None = None):
        """(B, L) ids -> (token states (B, L, width), pooled embedding (B, embed_dim))."""
        return self.text(tokens, override)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image(images)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                caption_ids: torch.Tensor | None = None):
        _, text_emb = self.encode_text(tokens)
        return clip_loss(self.encode_image(images), text_emb, self.logit_scale, caption_ids)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
              caption_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Fig. 3): mean of image->text and text->image cross-entropy over
    logits_ij = exp(s) cos(image_i, text_j), s the learned log inverse temperature (clamped at log
    100).

    caption_ids (B,): pairs with identical captions are all positives (a uniform target over them)
    rather than false negatives; with all-distinct captions this is exactly CLIP's loss.
    """
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)  # (B, E)
    # (B, E) @ (E, B) -> (B, B): row i is image i against every caption, column j caption j
    # against every image; the matching pairs sit on the diagonal
    logits = logit_scale.clamp(max=math.log(100)).exp() * image_emb @ text_emb.t()
    if caption_ids is None:
        targets = torch.eye(len(logits), device=logits.device)                # (B, B)
    else:
        targets = (caption_ids[:, None] == caption_ids[None, :]).float()      # (B, B)
    targets = targets / targets.sum(dim=1, keepdim=True)  # symmetric, so rows == columns
    # rows: image -> caption; logits.t() rows: caption -> image
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


@torch.no_grad()
def class_embeddings(clip: TinyClip, tokenizer, class_names, templates) -> torch.Tensor:
    """(C, embed_dim) unit vectors: each class's prompt embeddings averaged over templates (CLIP
    Sec. 3.1.4)."""
    device = clip.logit_scale.device
    out = []
    for name in class_names:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = F.normalize(clip.encode_text(tokens)[1], dim=-1).mean(dim=0)  # (T, E) -> (E,)
        out.append(F.normalize(emb, dim=0))
    return torch.stack(out)


@torch.no_grad()
def zero_shot_predict(clip: TinyClip, images: torch.Tensor, class_emb: torch.Tensor,
                      batch_size: int = 512):
    """images (N, 3, H, W) -> index of the most similar class embedding, (N,)."""
    preds = []
    for i in range(0, len(images), batch_size):
        emb = F.normalize(clip.encode_image(images[i:i + batch_size].to(class_emb.device)), dim=-1)
        preds.append((emb @ class_emb.t()).argmax(dim=1).cpu())  # (b, E) @ (E, C) -> (b, C)
    return torch.cat(preds)
