"""Self-initialization (Laria et al. 2022, Sec. 3.3): teach the hypernetwork to reproduce the frozen
generator before any real data is seen.

With one class embedding (label 0 for every sample), the same z and the same noise maps, minimise

    L = sum_blocks mean | G_hyper(z, 0)_block - G_base(z)_block |

over the class network and heads only, with Adam. As in the official self-alignment, the class
network learns at class_lr_mul (0.01) times the heads' rate: the heads do the fitting, so the class
path keeps the sensitivity to the embedding that transfer needs to tell classes apart (at the full
rate it learns to shut the embedding out: a 10% embedding step then moves the image several times
less; minigan/separation.py embedding_sensitivity measures it, and the start check below reports
it before and after). Departures, for a CPU budget: a few hundred steps (official 10k) and a cosine
decay of the learning rate to 0 (official constant), which lets the last steps settle the heads.
Embedding 0 is then copied to every class (HyperModulatedGenerator.copy_embedding_to_all_classes),
so transfer starts from the pretrained generator for every class; optionally with a little noise to
break the symmetry (official: none). Unlike set_identity_modulation(), the result is a hypernetwork
whose heads were trained from their random init, which is the paper's procedure.

The check: how close the modulated generator is to the base one, as FD-eval between their samples
next to FD-eval between two sample sets of the base generator itself (the floor), and its embedding
sensitivity; measured with the random heads and again after self-initialization.
"""
import time

import torch
from tqdm import tqdm

from core.training import FUSED, warmup_cosine
from eval.evalnet import extract_features
from eval.metrics import fd_from_features
from minigan.quality import sample_images
from minigan.separation import embedding_sensitivity


def block_l1(features, reference):
    """Sum over blocks of the mean absolute difference between two lists of block outputs."""
    return sum((f - r).abs().mean() for f, r in zip(features, reference))


def self_initialize(hyper_gen, steps, batch_size, lr, class_lr_mul=0.01, generator=None,
                    progress=True):
    """Train hyper_gen's heads (at lr) and class network (at lr * class_lr_mul) so that class 0
    reproduces hyper_gen.base; returns the loss at every step. generator: optional torch.Generator
    on hyper_gen's device, for z and noise."""
    base = hyper_gen.base
    device = base.const.device
    optimizer = torch.optim.Adam(hyper_gen.parameter_groups(lr, class_lr_mul), lr=lr, **FUSED)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda step: warmup_cosine(step, steps, 0, 0.0))
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


def selfinit_check(evaluator, hyper_gen, n, seed=0) -> dict:
    """FD-eval(modulated G, base G) next to FD-eval(base G, base G) for two independent base sample
    sets, and the embedding sensitivity.

    The modulated samples (class 0) use the same z and noise as the first base set (seed + 1), the
    second base set is independent (seed + 2): fd_modulated_vs_base = FD(mod(seed+1), base(seed+2))
    and the floor fd_base_vs_base = FD(base(seed+1), base(seed+2)). Pairing the z removes most of
    the sampling noise from the comparison, so ratio = fd_modulated_vs_base / fd_base_vs_base is 1
    exactly when the modulated generator reproduces the base one and grows with any difference."""
    labels = torch.zeros(n, dtype=torch.long)
    mod = extract_features(evaluator, sample_images(hyper_gen, n, labels, seed=seed + 1))
    base1 = extract_features(evaluator, sample_images(hyper_gen.base, n, seed=seed + 1))
    base2 = extract_features(evaluator, sample_images(hyper_gen.base, n, seed=seed + 2))
    fd_mod, fd_floor = fd_from_features(mod, base2), fd_from_features(base1, base2)
    return {"fd_modulated_vs_base": fd_mod, "fd_base_vs_base": fd_floor, "ratio": fd_mod / fd_floor,
            "n": n, "embedding_sensitivity": embedding_sensitivity(hyper_gen, seed=seed + 3)}


def self_initialize_and_check(hyper_gen, evaluator, t, n_check, seed=0) -> dict:
    """Measure how far hyper_gen starts from its base generator (random heads); with t.selfinit
    (t: the TransferConfig), run self-initialization, copy the embedding to every class (with
    t.selfinit_noise) and measure again. Returns the record that transfer keeps as its start
    check."""
    check = {"random_heads": selfinit_check(evaluator, hyper_gen, n_check, seed),
             "after_selfinit": None}
    if not t.selfinit:
        return check
    gen = torch.Generator(device=hyper_gen.base.const.device).manual_seed(seed)
    begin = time.time()
    losses = self_initialize(hyper_gen, t.selfinit_steps, t.selfinit_batch, t.selfinit_lr,
                             t.selfinit_class_lr_mul, generator=gen)
    hyper_gen.copy_embedding_to_all_classes(0, t.selfinit_noise, generator=gen)
    after = check["after_selfinit"] = selfinit_check(evaluator, hyper_gen, n_check, seed)
    check.update(selfinit_steps=t.selfinit_steps, selfinit_seconds=time.time() - begin,
                 l1_first=losses[0], l1_last=losses[-1])
    print(f"self-init: block L1 {losses[0]:.3f} -> {losses[-1]:.3f}; FD-eval(modulated, base) "
          f"{check['random_heads']['fd_modulated_vs_base']:.2f} -> "
          f"{after['fd_modulated_vs_base']:.2f} (base vs base {after['fd_base_vs_base']:.2f}, "
          f"ratio {after['ratio']:.2f}); embedding sensitivity "
          f"{check['random_heads']['embedding_sensitivity']:.3f} -> "
          f"{after['embedding_sensitivity']:.3f}")
    return check
