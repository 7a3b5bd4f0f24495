"""The GAN training loop shared by unconditional pretraining and every conditional transfer variant.

One step (StyleGAN2 schedule, Karras et al. 2020, App. B; A = DiffAugment with fresh draws per
call):

    D step:  L_D = E softplus(-D(A(x), y)) + E softplus(D(A(G(z, y')), y'))            (losses.py)
                   + every r1_every steps: r1_every * gamma/2 E ||grad_x D(A(x), y)||^2  (lazy R1)
                   + ssl_weight * [SSL(f(A(x)), f(A'(x))) + SSL(f(A(G)), f(A'(G)))]
                                                                          (SSL on D, Laria et al.)
    G step:  L_G = E softplus(-D(A(G(z, y')), y'))   only the generator's trainable parameters move
    EMA of the generator after every G step.

f is D's penultimate feature vector; A and A' are two independent augmentations of the same images,
and A is the batch D just scored, so the self-supervised loss costs one extra D pass per batch.
Unconditional training passes labels=None.
Adam with StyleGAN's betas (0, 0.99); D's class-specific parameters (Discriminator.class_parameters)
may get a larger learning rate: in transfer they start identical for every class, and until they
differ D gives G no class signal at all. Real batches, z, noise and augmentations all draw from
torch's global RNG, so a checkpoint that stores it (core.checkpoint.rng_state) resumes bit for bit.
Under torchrun each rank draws batch_size / world_size images from its own RNG stream, seeded by
(spec.seed, step, rank) when training starts, and gradients are averaged across ranks after every
backward (core.distributed.average_gradients); rank 0 alone writes checkpoints.
On CUDA every G and D pass runs under bf16 autocast except the R1 pass, whose input gradient is
squared and summed and stays in float32; losses are computed in float32.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from core import checkpoint, distributed
from core.training import EMA, FUSED, autocast, check_finite, mix_seed
from minigan.augment import diff_augment
from minigan.losses import (barlow_twins_loss, d_logistic_loss, g_nonsaturating_loss, nt_xent_loss,
                            r1_penalty)

SSL_LOSSES = {"barlow": barlow_twins_loss, "ntxent": nt_xent_loss}
ADAM_BETAS = (0.0, 0.99)


@dataclass
class LoopSpec:
    steps: int
    batch_size: int
    lr_g: float
    lr_d: float
    r1_gamma: float
    r1_every: int
    ema_decay: float
    augment: tuple[str, ...]           # DiffAugment ops
    ssl: str = "none"                  # none | barlow | ntxent
    ssl_weight: float = 0.0
    d_class_lr_mul: float = 1.0        # learning-rate multiplier of D's class-specific parameters
    checkpoint_every: int = 0          # 0: only at the end
    log_every: int = 25
    monitor_every: int = 0             # train(monitor=...): record monitor(G_ema) every N steps
                                       # (0: never)
    seed: int = 0                      # seeds each rank's RNG stream in a distributed run


class GanTrainer:
    """Holds G (anything called as G(z) or G(z, labels)), D, their optimizers and G's EMA.

    g_params: the generator parameters that train (the rest of G stays as it is), or Adam parameter
    groups (dicts with "params" and their own "lr"). real: (N, 3, H, W) in [-1, 1] on the device;
    labels: (N,) class indices in [0, n_classes) or None (unconditional).
    """

    def __init__(self, G, D, g_params, z_dim, real, labels, n_classes, spec: LoopSpec, stage: str):
        if spec.ssl != "none" and spec.ssl not in SSL_LOSSES:
            raise ValueError(f"unknown self-supervised loss {spec.ssl!r}; choose from "
                             f"{', '.join(SSL_LOSSES)}")
        if spec.r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {spec.r1_every}")
        if spec.batch_size % distributed.world_size():
            raise ValueError(f"batch size {spec.batch_size} must divide among "
                             f"{distributed.world_size()} ranks")
        self.rank_batch = spec.batch_size // distributed.world_size()
        self.opt_g = torch.optim.Adam(list(g_params), lr=spec.lr_g, betas=ADAM_BETAS, **FUSED)
        self.g_params = [p for group in self.opt_g.param_groups for p in group["params"]]
        (self.G, self.D, self.z_dim, self.real, self.labels,
         self.n_classes) = G, D, z_dim, real, labels, n_classes
        self.spec, self.stage, self.device = spec, stage, real.device
        class_ids = {id(p) for p in D.class_parameters()}
        groups = [{"params": [p for p in D.parameters() if id(p) not in class_ids]},
                  {"params": D.class_parameters(), "lr": spec.lr_d * spec.d_class_lr_mul}]
        self.opt_d = torch.optim.Adam(groups, lr=spec.lr_d, betas=ADAM_BETAS, **FUSED)
        self.ema = EMA(G, spec.ema_decay)
        self.step, self.log, self.seconds = 0, [], 0.0

    # ------------------------------------------------------------------------------------- one step

    def generate(self, module, z, labels):
        return module(z) if labels is None else module(z, labels)

    def sample_inputs(self, n):
        """z (n, z_dim) and fake labels (n,) uniform over the classes (None when unconditional)."""
        z = torch.randn(n, self.z_dim, device=self.device)
        labels = (None if self.labels is None
                  else torch.randint(self.n_classes, (n,), device=self.device))
        return z, labels

    def d_step(self):
        # one DiffAugment for reals and fakes: more varied data for D, and no real/fake cue in it
        s = self.spec
        idx = torch.randint(len(self.real), (self.rank_batch,), device=self.device)
        real_raw, real_labels = self.real[idx], None if self.labels is None else self.labels[idx]
        z, fake_labels = self.sample_inputs(self.rank_batch)
        with torch.no_grad(), autocast(self.device):
            fake_raw = self.generate(self.G, z, fake_labels).float()
        real, fake = diff_augment(real_raw, s.augment), diff_augment(fake_raw, s.augment)
        do_r1 = s.r1_gamma > 0 and self.step % s.r1_every == 0
        real.requires_grad_(do_r1)
        # logits (B,) and D's penultimate features (B, F) (F = D's width at 4x4), the features
        # that the SSL loss compares; B = the batch on this rank
        if do_r1:                                       # the R1 pass stays in float32
            real_logits, real_f = self.D(real, real_labels, return_features=True)
        else:
            with autocast(self.device):
                real_logits, real_f = self.D(real, real_labels, return_features=True)
        with autocast(self.device):
            fake_logits, fake_f = self.D(fake, fake_labels, return_features=True)
        loss = d_logistic_loss(real_logits.float(), fake_logits.float())
        out = {"d": loss.item()}
        if do_r1:
            r1 = r1_penalty(real_logits.float(), real, s.r1_gamma)
            loss = loss + s.r1_every * r1
            out["r1"] = r1.item()
        if s.ssl != "none":
            ssl = self.ssl_loss(real_raw, real_f) + self.ssl_loss(fake_raw, fake_f)
            loss = loss + s.ssl_weight * ssl
            out["ssl"] = ssl.item()
        check_finite(loss, self.stage, self.step)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.D.parameters())
        self.opt_d.step()
        return out

    def ssl_loss(self, images, features1):
        """SSL between features1 (D's features of one augmentation of images) and a second one."""
        with autocast(self.device):
            features2 = self.D.features(diff_augment(images, self.spec.augment))  # (B, F)
        return SSL_LOSSES[self.spec.ssl](features1.float(), features2.float())

    def g_step(self):
        # D frozen: the gradient flows through D to G without filling D's grads; A is differentiable
        s = self.spec
        z, labels = self.sample_inputs(self.rank_batch)
        self.D.requires_grad_(False)
        with autocast(self.device):
            logits = self.D(diff_augment(self.generate(self.G, z, labels), s.augment), labels)
        loss = g_nonsaturating_loss(logits.float())
        check_finite(loss, self.stage, self.step)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.g_params)
        self.opt_g.step()
        self.D.requires_grad_(True)
        self.ema.update(self.G)
        return {"g": loss.item()}

    # ----------------------------------------------------------------------------- loop and resume

    def train(self, save: Callable[[dict], None], progress=True,
              monitor: Callable[[object], dict] | None = None):
        """Run to spec.steps, calling save(self.state()) every checkpoint_every steps and at the
        end. monitor(G_ema) -> dict (it must not draw from torch's global RNG, or resume would not
        be exact) is logged at step 0 and every spec.monitor_every steps."""
        s = self.spec
        watch = monitor is not None and s.monitor_every > 0
        if watch and self.step == 0:
            self.log.append({"step": 0, **monitor(self.ema.model)})
        if distributed.world_size() > 1:  # one start for all ranks, a different stream on each
            for module in (self.G, self.D, self.ema.model):
                distributed.broadcast_module(module)
            torch.manual_seed(mix_seed(s.seed, self.step, distributed.rank()))
        bar = tqdm(range(self.step, s.steps), initial=self.step, total=s.steps, desc=self.stage,
                   disable=not (progress and distributed.is_main()))
        start = time.time() - self.seconds
        for _ in bar:
            self.G.train()
            losses = {**self.d_step(), **self.g_step()}
            self.step += 1
            self.seconds = time.time() - start
            monitored = watch and (self.step % s.monitor_every == 0 or self.step == s.steps)
            if monitored:
                losses.update(monitor(self.ema.model))
            if monitored or self.step % s.log_every == 0 or self.step == s.steps:
                self.log.append({"step": self.step, **losses})
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            if self.step == s.steps or (s.checkpoint_every and self.step % s.checkpoint_every == 0):
                save(self.state())
        distributed.check_in_sync(self.G, "G")
        distributed.check_in_sync(self.D, "D")
        return self.log

    def state(self) -> dict:
        return {"step": self.step, "seconds": self.seconds, "log": self.log,
                "G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "ema": self.ema.state_dict(), "rng": checkpoint.rng_state()}

    def load_state(self, payload: dict):
        """Resume from a payload holding state(): weights, optimizers, EMA, RNG, step, log."""
        self.G.load_state_dict(payload["G"])
        self.D.load_state_dict(payload["D"])
        self.opt_g.load_state_dict(payload["opt_g"])
        self.opt_d.load_state_dict(payload["opt_d"])
        self.ema.load_state_dict(payload["ema"])
        checkpoint.set_rng_state(payload["rng"])
        self.step, self.seconds, self.log = payload["step"], payload["seconds"], payload["log"]
