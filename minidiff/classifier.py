"""Zero-shot classification with the diffusion model itself (Li et al. 2023, "Your Diffusion Model
is Secretly a Zero-Shot Classifier", Sec. 3).

For an image x and candidate prompts c_1..c_K, with timesteps t_i on an even grid and noise eps_i
drawn for this image and shared by every class,

    score(x, c) = mean_i || eps_i - eps_theta(sqrt(abar_ti) x + sqrt(1 - abar_ti) eps_i, t_i, c) ||
                  (L2^2 or L1)

and the prediction is argmin_c score(x, c): the prompt under which the model denoises x best.
Sharing eps_i across classes is what makes the comparison work: ||eps_i||^2 is much larger than the
differences between classes, and it cancels only when every class sees the same eps_i.

The full grid holds the midpoints of n even bins of [0, T). Scoring every class at every timestep of
it gives an error table (B images, K classes, n timesteps), from which everything else follows
without another UNet pass: the prediction at a smaller budget (a centred sub-grid), the margin
of each image

    margin(x) = score(x, true class) - min_{c != true} score(x, c)     (< 0: right, and by how much)

and each prompt's mean error. The drift measurement uses such tables. Adaptive evaluation (Sec. 3.2,
as the authors' eval_prob_adaptive.py) spends fewer passes: stage s scores the classes still in the
running on n_s timesteps evenly spaced and centred in the grid (skipping any scored before),
averages each class's errors over every timestep scored so far, and keeps the best keep_s classes.
Each image gets its own noise bank, a pure function of (seed, image index), so the base and a
customized model classify an image with the same noise, and a batch split never changes a
prediction. Every result reports the UNet passes per image.
"""
from __future__ import annotations

import torch

from core.config import ClassifierConfig
from core.training import mix_seed
from minidiff.diffusion import Diffusion
from minidiff.text2img import TextToImage


def stage_grid(n: int, size: int) -> torch.Tensor:
    """`size` indices evenly spaced and centred in 0..n-1 (size divides n): e.g. n=40, size=5
    -> 4, 12, ..., 36."""
    stride = n // size
    return stride // 2 + stride * torch.arange(size)


class DiffusionClassifier:
    def __init__(self, model: TextToImage, diffusion: Diffusion, prompts: list[str],
                 cfg: ClassifierConfig, resolution: int, seed: int = 0, unet_batch: int = 512):
        self.model, self.diffusion, self.cfg, self.unet_batch = (model.eval(), diffusion, cfg,
                                                                 unet_batch)
        self.seed, self.resolution = seed, resolution
        with torch.no_grad():
            self.cond = model.encode(prompts)  # (K, L, D), (K, E)
        n, T = cfg.n_timesteps, diffusion.timesteps
        self.timesteps = ((torch.arange(n) + 0.5) * T / n).long()  # midpoints of n even bins

    def noise_bank(self, image_ids) -> torch.Tensor:
        """(B, n_timesteps, 3, H, W): one noise per timestep for each image, the same for every
        class."""
        shape = (self.cfg.n_timesteps, 3, self.resolution, self.resolution)
        return torch.stack([
            torch.randn(shape, generator=torch.Generator().manual_seed(mix_seed(self.seed, int(i))))
            for i in image_ids]).to(self.model.device)

    @torch.no_grad()
    def errors(self, x0: torch.Tensor, noise: torch.Tensor, classes: torch.Tensor,
               grid: torch.Tensor) -> torch.Tensor:
        """x0 (B, 3, H, W), noise (B, n, 3, H, W), classes (B, k) candidate indices per image, grid
        (m,) timestep indices -> per (image, class, timestep) noise-prediction error (B, k, m)."""
        b, k, m = len(x0), classes.shape[1], len(grid)
        img = torch.arange(b).repeat_interleave(k * m)  # (B*k*m,) flattened (image, class, t)
        cls = classes.cpu().repeat_interleave(m, dim=1).flatten()
        tix = grid.repeat(b * k)
        out = []
        for s in range(0, len(img), self.unet_batch):
            i, c, j = (img[s:s + self.unet_batch], cls[s:s + self.unet_batch],
                       tix[s:s + self.unet_batch])
            t = self.timesteps[j].to(x0.device)
            # the same eps for every class of an image
            eps = noise[i.to(x0.device), j.to(x0.device)]
            x_t = self.diffusion.q_sample(x0[i.to(x0.device)], t, eps)
            pred = self.model(x_t, t, (self.cond[0][c.to(x0.device)],
                                       self.cond[1][c.to(x0.device)]))
            diff = pred - eps
            out.append((diff.abs() if self.cfg.loss == "l1" else diff.pow(2)).mean(dim=(1, 2, 3)))
        return torch.cat(out).view(b, k, m)

    def classify(self, x0: torch.Tensor, image_ids, adaptive: bool = True) -> dict:
        """Predicted class index per image (B,), the final scores (B, K) (inf for classes dropped
        early) and the UNet passes per image; without `adaptive`, also the error table (B, K, n).
        image_ids (B,) pick each image's noise bank."""
        n_classes, b, n = len(self.cond[0]), len(x0), self.cfg.n_timesteps
        noise = self.noise_bank(image_ids)
        candidates = torch.arange(n_classes).expand(b, n_classes)
        if not adaptive:
            table = self.errors(x0, noise, candidates, torch.arange(n)).cpu()     # (B, K, n)
            scores = table.mean(dim=2)
            return {"pred": scores.argmin(dim=1), "scores": scores, "unet_passes": n_classes * n,
                    "errors": table}
        # errors of the candidates on the timesteps scored so far
        done = torch.zeros(b, n_classes, 0)
        scored = torch.zeros(0, dtype=torch.long)
        passes = 0
        for size, keep in zip(self.cfg.stages, self.cfg.keep):
            grid = stage_grid(n, size)
            new = grid[~torch.isin(grid, scored)]
            done = torch.cat([done, self.errors(x0, noise, candidates, new).cpu()], dim=2)
            scored = torch.cat([scored, new])
            passes += candidates.shape[1] * len(new)
            order = done.mean(dim=2).argsort(dim=1)[:, :keep]   # best `keep` classes per image
            candidates = candidates.gather(1, order)
            done = done.gather(1, order[:, :, None].expand(-1, -1, done.shape[2]))
        scores = torch.full((b, n_classes), float("inf"))
        scores.scatter_(1, candidates, done.mean(dim=2))
        return {"pred": candidates[:, 0], "scores": scores, "unet_passes": passes}


def classify_images(classifier: DiffusionClassifier, images: torch.Tensor, batch_size: int,
                    adaptive: bool = True, progress=None) -> dict:
    """Classify (N, 3, H, W) images in batches (image i always with noise bank i) -> {'pred' (N,),
    'unet_passes' per image, and without `adaptive` 'errors' (N, K, n)}."""
    preds, tables, passes = [], [], 0
    for s in range(0, len(images), batch_size):
        batch = images[s:s + batch_size].to(classifier.model.device)
        result = classifier.classify(batch, range(s, s + len(batch)), adaptive)
        preds.append(result["pred"])
        tables.append(result.get("errors"))
        passes = result["unet_passes"]
        if progress is not None:
            progress.update(len(result["pred"]))
    out = {"pred": torch.cat(preds), "unet_passes": passes}
    if not adaptive:
        out["errors"] = torch.cat(tables)
    return out


# ------------------------------------------------------------------------------------- error tables

def predict(errors: torch.Tensor, budget: int | None = None) -> torch.Tensor:
    """Predictions (N,) from an error table (N, K, n) using only `budget` timesteps of its grid (a
    centred sub-grid, stage_grid; budget must divide n; None: all of them)."""
    grid = stage_grid(errors.shape[2], budget) if budget else torch.arange(errors.shape[2])
    return errors[:, :, grid].mean(dim=2).argmin(dim=1)


def margins(errors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """score(true class) - best score of another class, per image (N,): negative when the image is
    classified right, by how much; a paired change of it is a continuous measure of drift that
    counts every image, not only those that cross a decision boundary."""
    scores = errors.double().mean(dim=2)                                # (N, K)
    true = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], float("inf")).min(dim=1).values
    return true - others
