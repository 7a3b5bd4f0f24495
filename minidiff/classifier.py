"""Zero-shot classification with the diffusion model itself (Li et al. 2023, "Your Diffusion Model is
Secretly a Zero-Shot Classifier", Sec. 3).

For an image x and candidate prompts c_1..c_K, with the same timesteps t_i (an even grid) and the same
noise eps_i for every class,

    score(x, c) = mean_i || eps_i - eps_theta(sqrt(abar_ti) x + sqrt(1 - abar_ti) eps_i, t_i, c) ||   (L2^2 or L1)

and the prediction is argmin_c score(x, c): the prompt under which the model denoises x best.

Adaptive evaluation (Sec. 3.2): stage s scores the classes still in the running on a larger nested sub-grid
of n_s timesteps (evenly spaced, each stage's grid containing the previous one, so finished timesteps are
reused) and keeps the best keep_s classes. Every result reports the UNet passes per image.
"""
from __future__ import annotations

import torch

from core.config import ClassifierConfig
from minidiff.diffusion import Diffusion
from minidiff.text2img import TextToImage


def check_schedule(cfg: ClassifierConfig, n_classes: int) -> None:
    """Stages must be nested sub-grids of the full grid, keep counts decreasing to 1."""
    n, stages, keep = cfg.n_timesteps, cfg.stages, cfg.keep
    problems = []
    if len(stages) != len(keep) or not stages:
        problems.append("classifier.stages and classifier.keep need the same (non-zero) length")
    elif any(n % s for s in stages) or any(b % a for a, b in zip(stages, stages[1:])):
        problems.append(f"every stage size must divide the next and n_timesteps={n}")
    elif list(keep) != sorted(keep, reverse=True) or keep[-1] != 1 or keep[0] > n_classes:
        problems.append(f"keep must decrease to 1 and never exceed the {n_classes} classes (at most {n_classes})")
    if cfg.loss not in ("l1", "l2"):
        problems.append(f"classifier.loss={cfg.loss!r}; valid choices: l1, l2")
    if problems:
        raise ValueError(f"bad classifier schedule stages={stages} keep={keep}: " + "; ".join(problems))


class DiffusionClassifier:
    def __init__(self, model: TextToImage, diffusion: Diffusion, prompts: list[str], cfg: ClassifierConfig,
                 resolution: int, seed: int = 0, max_batch: int = 1024):
        check_schedule(cfg, len(prompts))
        self.model, self.diffusion, self.cfg, self.max_batch = model.eval(), diffusion, cfg, max_batch
        with torch.no_grad():
            self.cond = model.encode(prompts)  # (K, L, D), (K, E)
        n, T = cfg.n_timesteps, diffusion.timesteps
        self.timesteps = ((torch.arange(n) + 0.5) * T / n).long()  # even grid of midpoints
        gen = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(n, 3, resolution, resolution, generator=gen).to(model.device)

    @torch.no_grad()
    def errors(self, x0: torch.Tensor, classes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """x0 (B, 3, H, W), classes (B, k) candidate indices per image, grid (m,) timestep indices ->
        per (image, class, timestep) noise-prediction error (B, k, m)."""
        b, k, m = len(x0), classes.shape[1], len(grid)
        img = torch.arange(b).repeat_interleave(k * m)               # (B*k*m,) flattened (image, class, t)
        cls = classes.cpu().repeat_interleave(m, dim=1).flatten()
        tix = grid.repeat(b * k)
        out = []
        for s in range(0, len(img), self.max_batch):
            i, c, j = img[s:s + self.max_batch], cls[s:s + self.max_batch], tix[s:s + self.max_batch]
            t = self.timesteps[j].to(x0.device)
            eps = self.noise[j]
            x_t = self.diffusion.q_sample(x0[i.to(x0.device)], t, eps)
            pred = self.model(x_t, t, (self.cond[0][c.to(x0.device)], self.cond[1][c.to(x0.device)]))
            diff = pred - eps
            out.append((diff.abs() if self.cfg.loss == "l1" else diff.pow(2)).mean(dim=(1, 2, 3)))
        return torch.cat(out).view(b, k, m)

    def classify(self, x0: torch.Tensor, adaptive: bool = True) -> dict:
        """Predicted class index per image (B,), the final scores (B, K) (inf for classes dropped early)
        and the UNet passes per image."""
        n_classes = len(self.cond[0])
        b = len(x0)
        if not adaptive:
            candidates = torch.arange(n_classes).expand(b, n_classes)
            scores = self.errors(x0, candidates, torch.arange(self.cfg.n_timesteps)).mean(dim=2).cpu()
            return {"pred": scores.argmin(dim=1), "scores": scores, "unet_passes": n_classes * self.cfg.n_timesteps}
        candidates = torch.arange(n_classes).expand(b, n_classes)
        done = torch.zeros(b, n_classes, 0)          # errors on the timesteps scored so far
        done_grid = torch.zeros(0, dtype=torch.long)
        passes = 0
        for size, keep in zip(self.cfg.stages, self.cfg.keep):
            grid = torch.arange(0, self.cfg.n_timesteps, self.cfg.n_timesteps // size)
            new = grid[~torch.isin(grid, done_grid)]
            done = torch.cat([done, self.errors(x0, candidates, new).cpu()], dim=2)
            done_grid = torch.cat([done_grid, new])
            passes += candidates.shape[1] * len(new)
            order = done.mean(dim=2).argsort(dim=1)[:, :keep]   # best `keep` classes per image
            candidates = candidates.gather(1, order)
            done = done.gather(1, order[:, :, None].expand(-1, -1, done.shape[2]))
        scores = torch.full((b, n_classes), float("inf"))
        scores.scatter_(1, candidates, done.mean(dim=2))
        return {"pred": candidates[:, 0], "scores": scores, "unet_passes": passes}


def classify_images(classifier: DiffusionClassifier, images: torch.Tensor, batch_size: int,
                    adaptive: bool = True, progress=None) -> dict:
    """Classify (N, 3, H, W) images in batches -> {'pred' (N,), 'unet_passes' per image}."""
    preds, passes = [], 0
    for s in range(0, len(images), batch_size):
        result = classifier.classify(images[s:s + batch_size].to(classifier.model.device), adaptive)
        preds.append(result["pred"])
        passes = result["unet_passes"]
        if progress is not None:
            progress.update(len(result["pred"]))
    return {"pred": torch.cat(preds), "unet_passes": passes}
