"""Gaussian diffusion: noise schedules, the forward process, the eps-prediction loss and two
samplers.

Notation of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"): beta_t,
alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s, with t = 0..T-1 here (the paper's t = 1..T).

  forward process  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                        (Eq. 4)
  training loss    E_{x0, t, eps} ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2
                                                                               (Algorithm 1, Eq. 14)
  DDPM sampling    Algorithm 2, with the posterior variance
                   beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
  DDIM sampling    Song et al. 2021 ("Denoising Diffusion Implicit Models"), Eq. 12 and 16, with eta

A model is passed as `eps_fn(x_t, t) -> eps`, a closure holding the conditioning (and
classifier-free guidance, see TextToImage.eps_fn), so this file knows nothing about networks or
text.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al. 2020, Sec. 4: beta from 1e-4 to 0.02 over T = 1000 (rescaled for other T)."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: abar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s))
    pi/2); beta_t = 1 - abar_t / abar_{t-1}, clipped at 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def classifier_free_guidance(eps_cond: torch.Tensor, eps_uncond: torch.Tensor,
                             scale: float) -> torch.Tensor:
    """Ho & Salimans 2022, Eq. 6: eps_u + s (eps_c - eps_u); s = 1 gives the conditional
    prediction."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


class Diffusion:
    def __init__(self, timesteps: int = 1000, schedule: str = "cosine"):
        schedules = {"linear": linear_betas, "cosine": cosine_betas}
        if schedule not in schedules:
            raise ValueError(f"unknown schedule {schedule!r}; valid choices: "
                             f"{', '.join(schedules)}")
        self.timesteps = timesteps
        self.betas = schedules[schedule](timesteps)                  # float64 (T,)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)   # abar_t

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """abar_t for a batch of timesteps, shaped (B, 1, 1, 1) to broadcast over images;
        abar_{-1} = 1."""
        abar = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])[t.cpu() + 1]
        return abar.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) (Eq. 4) with the given noise."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def loss(self, eps_fn: EpsFn, x0: torch.Tensor, generator: torch.Generator | None = None,
             reduce: bool = True) -> torch.Tensor:
        """Algorithm 1: uniform t, Gaussian eps, MSE between eps and eps_theta(x_t, t)."""
        t = torch.randint(self.timesteps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        per_image = (eps_fn(self.q_sample(x0, t, noise), t) - noise).pow(2).mean(dim=(1, 2, 3))
        return per_image.mean() if reduce else per_image

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 4: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        abar = self._abar(t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def _denoised(self, eps_fn: EpsFn, x: torch.Tensor, t: int, clip: bool):
        """eps_theta and x0_hat at step t; with clip, x0_hat is clamped to [-1, 1] and eps made
        consistent."""
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        eps = eps_fn(x, tt)
        x0 = self.predict_x0(x, tt, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
            abar = self._abar(tt, x)
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return eps, x0

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps evenly spaced over [0, T-1], in decreasing order."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"DDIM steps must be in [1, {self.timesteps}], got {steps}")
        return torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()

    def ddim_sigma(self, t: int, t_prev: int, eta: float) -> float:
        """Song et al. Eq. 16: sigma = eta sqrt((1 - abar_prev) / (1 - abar_t))
        sqrt(1 - abar_t / abar_prev)."""
        abar_t = self.alphas_cumprod[t]
        abar_prev = (self.alphas_cumprod[t_prev] if t_prev >= 0
                     else torch.tensor(1.0, dtype=torch.float64))
        return float(eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt())

    @torch.no_grad()
    def ddim_sample(self, eps_fn: EpsFn, x_T: torch.Tensor, steps: int = 50, eta: float = 0.0,
                    generator: torch.Generator | None = None, clip: bool = True,
                    progress=None) -> torch.Tensor:
        """DDIM (Song et al. Eq. 12) from the initial noise x_T; eta = 0 is deterministic, eta = 1
        with steps = T is ancestral DDPM sampling.

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_theta + sigma z
        """
        ts = self.ddim_timesteps(steps)
        x = x_T
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            eps, x0 = self._denoised(eps_fn, x, t, clip)
            abar_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
            sigma = self.ddim_sigma(t, t_prev, eta)
            x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma ** 2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
            if progress is not None:
                progress.update(1)
        return x

    @torch.no_grad()
    def ddpm_sample(self, eps_fn: EpsFn, x_T: torch.Tensor,
                    generator: torch.Generator | None = None, clip: bool = True) -> torch.Tensor:
        """Ancestral sampling, Ho et al. Algorithm 2, through the posterior mean of q(x_{t-1} | x_t,
        x_0) (Eq. 7) with variance beta~_t; no noise at the last step."""
        x = x_T
        for t in reversed(range(self.timesteps)):
            _, x0 = self._denoised(eps_fn, x, t, clip)
            abar_t = float(self.alphas_cumprod[t])
            abar_prev = float(self.alphas_cumprod[t - 1]) if t > 0 else 1.0
            beta_t = float(self.betas[t])
            mean = (math.sqrt(abar_prev) * beta_t / (1 - abar_t)) * x0 \
                + (math.sqrt(1 - beta_t) * (1 - abar_prev) / (1 - abar_t)) * x
            if t > 0:
                variance = (1 - abar_prev) / (1 - abar_t) * beta_t
                mean = mean + math.sqrt(variance) * torch.randn(
                    x.shape, generator=generator).to(x.device)
            x = mean
        return x
