"""The text-to-image model: UNet + frozen tiny-CLIP text encoder + tokenizer, and image generation.

`TextToImage.encode(prompts)` turns captions into the UNet's conditioning (token states, pooled
embedding). Placeholder tokens such as <new0> get their embedding from `placeholders`, the only
text-side parameters that customization (textual inversion, Custom Diffusion) may train.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm import tqdm

from core.config import PLACEHOLDERS
from core.data import to_uint8
from minidiff.clip import TextEncoder
from minidiff.diffusion import Diffusion, EpsFn, classifier_free_guidance
from minidiff.tokenizer import Tokenizer
from minidiff.unet import UNet


# the reserved token whose embedding encode(subjects=...) sets per prompt
SUBJECT = PLACEHOLDERS[-1]


class TextToImage(nn.Module):
    def __init__(self, unet: UNet, text: TextEncoder, tokenizer: Tokenizer):
        super().__init__()
        self.unet = unet
        self.text = text.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.placeholders = nn.ParameterDict()  # "<new0>" -> (width,) embedding

    def train(self, mode: bool = True):
        super().train(mode)
        self.text.eval()  # the text encoder is frozen, always in inference mode
        return self

    @property
    def device(self) -> torch.device:
        return self.text.position_embedding.device

    def add_placeholder(self, token: str, init: torch.Tensor) -> nn.Parameter:
        self.tokenizer.placeholder_id(token)  # validates the name
        self.placeholders[token] = nn.Parameter(init.clone().to(self.device))
        return self.placeholders[token]

    def encode(self, prompts: list[str],
               subjects: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts -> token states (B, L, width), pooled embedding (B, embed_dim). subjects
        (B, width): an embedding per prompt for the token SUBJECT in it (a conditioning no word
        spells: random anchors)."""
        tokens = self.tokenizer(prompts).to(self.device)
        override = {self.tokenizer.stoi[k]: v for k, v in self.placeholders.items()}
        if subjects is not None:
            # (B, 1, width)
            override[self.tokenizer.stoi[SUBJECT]] = subjects[:, None, :].to(self.device)
        return self.text(tokens, override)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                cond: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.unet(x, t, *cond)

    def eps_fn(self, prompts: list[str], guidance: float = 1.0) -> EpsFn:
        """eps_theta(x_t, t | prompts) with classifier-free guidance; conditional and unconditional
        predictions share one batched UNet call."""
        cond = self.encode(prompts)
        if guidance == 1.0:
            return lambda x, t: self(x, t, cond)
        uncond = self.encode([""] * len(prompts))
        both = tuple(torch.cat([c, u]) for c, u in zip(cond, uncond))

        def eps(x, t):
            e_cond, e_uncond = self(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return classifier_free_guidance(e_cond, e_uncond, guidance)
        return eps


# Every set of generated images draws its initial noise x_T from its own range of seeds, so that no
# image the drift protocol measures is an image a regularizer trained on (or the same image counted
# twice):
#     seed = SEED_RANGES[kind] + bank * BANK_SIZE + i,   i < BANK_SIZE
# bank: the repeat (customize.seed) for drift pairs and noise-floor pairs; 0 for the other kinds.
SEED_RANGES = {"anchor": 1_000_000, "prior": 2_000_000, "fidelity": 3_000_000, "quality": 4_000_000,
               "drift": 5_000_000, "floor": 6_000_000, "attributes": 7_000_000,
               "attributes-floor": 8_000_000}
BANK_SIZE = 10_000


def seed_range(kind: str, n: int, bank: int = 0) -> list[int]:
    """n seeds of one kind's range (see SEED_RANGES)."""
    if n > BANK_SIZE or not 0 <= bank < (1_000_000 // BANK_SIZE):
        raise ValueError(f"{n} {kind} seeds of bank {bank} would leave the range of {kind!r}")
    start = SEED_RANGES[kind] + bank * BANK_SIZE
    return list(range(start, start + n))


def initial_noise(seeds, resolution: int) -> torch.Tensor:
    """x_T for each seed, (N, 3, H, W): image i depends only on seeds[i], not on the batch it is
    in."""
    return torch.stack([torch.randn(3, resolution, resolution,
                                    generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


@torch.no_grad()
def generate(model: TextToImage, diffusion: Diffusion, prompts: list[str], seeds, resolution: int,
             steps: int = 25, guidance: float = 3.0, eta: float = 0.0, unet_batch: int = 512,
             progress: bool = True, phase: str = "sampling") -> torch.Tensor:
    """DDIM samples for (prompt, seed) pairs -> (N, H, W, 3) uint8; deterministic for eta = 0.
    unet_batch bounds the UNet's batch (guidance runs two passes per image, so half as many images
    per call); `phase` names the progress bar."""
    assert len(prompts) == len(seeds), "one seed per prompt"
    batch_size = max(1, unet_batch // (1 if guidance == 1.0 else 2))
    model.eval()
    out = []
    bar = tqdm(total=steps * -(-len(prompts) // batch_size), desc=phase, disable=not progress,
               leave=False)
    for i in range(0, len(prompts), batch_size):
        x_T = initial_noise(seeds[i:i + batch_size], resolution).to(model.device)
        eps = model.eps_fn(list(prompts[i:i + batch_size]), guidance)
        out.append(to_uint8(diffusion.ddim_sample(eps, x_T, steps, eta, progress=bar)))
    bar.close()
    return torch.cat(out)

