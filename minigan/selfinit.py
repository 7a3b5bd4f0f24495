"""Self-initialization (Laria et al. 2022, Sec. 3.3): teach the hypernetwork to reproduce the frozen
generator before any real data is seen.

With one class embedding (label 0 for every sample), the same z and the same noise maps, minimise

    L = sum_blocks mean | G_hyper(z, 0)_block - G_base(z)_block |

over the class network and heads only, with Adam and a cosine decay of the learning rate to 0 (the
last steps settle the heads instead of jittering around the optimum). The caller then copies embedding 0
to every class (HyperModulatedGenerator.copy_embedding_to_all_classes), so transfer starts from the
pretrained generator for every class. Unlike set_identity_modulation(), the result is a hypernetwork whose
heads were trained from their random init, which is the paper's procedure.
"""
import torch
from tqdm import tqdm

from core.training import warmup_cosine


def block_l1(features, reference):
    """Sum over blocks of the mean absolute difference between two lists of block outputs."""
    return sum((f - r).abs().mean() for f, r in zip(features, reference))


def self_initialize(hyper_gen, steps, batch_size, lr, generator=None, progress=True):
    """Train hyper_gen's trainable parameters so that class 0 reproduces hyper_gen.base; returns the loss
    at every step. generator: optional torch.Generator on hyper_gen's device, for z and noise."""
    base = hyper_gen.base
    device = base.const.device
    optimizer = torch.optim.Adam(hyper_gen.trainable_parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, 0, 0.0))
    labels = torch.zeros(batch_size, dtype=torch.long, device=device)
    losses = []
    bar = tqdm(range(steps), desc="self-init", disable=not progress)
    for _ in bar:
        z = torch.randn(batch_size, base.z_dim, generator=generator, device=device)
        noise = base.make_noise(batch_size, generator=generator)
        with torch.no_grad():
            _, reference = base(z, noise=noise, return_features=True)
        _, features = hyper_gen(z, labels, noise=noise, return_features=True)
        loss = block_l1(features, reference)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(l1=f"{losses[-1]:.4f}")
    return losses
