"""GAN losses and self-supervised discriminator losses.

  * non-saturating logistic loss (Goodfellow et al. 2014, Sec. 3), written with softplus:
        L_D = E[softplus(-D(x))] + E[softplus(D(G(z)))],   L_G = E[softplus(-D(G(z)))]
    since -log sigmoid(t) = softplus(-t) and -log(1 - sigmoid(t)) = softplus(t).
  * R1 gradient penalty on real images (Mescheder et al. 2018, Eq. 9): gamma/2 E ||grad_x D(x)||^2.
  * Barlow Twins (Zbontar et al. 2021, Eq. 1) between the D features of two augmented views.
  * NT-Xent (Chen et al. 2020, SimCLR, Eq. 1).
"""
import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits, fake_logits):
    """E[softplus(-D(x))] + E[softplus(D(G(z)))]: -log sigmoid on reals, -log(1 - sigmoid) on
    fakes."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits):
    """E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))], the non-saturating generator loss."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits, real_images, gamma=10.0):
    """gamma/2 * E_x ||dD(x)/dx||^2. real_images must have requires_grad=True before D is applied;
    the graph is kept (create_graph) so the penalty can be backpropagated into D."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(dim=1).mean()  # (B, 3, H, W) -> (B,) -> mean


def barlow_twins_loss(z1, z2, lambda_offdiag=5e-3, eps=1e-5):
    """sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2 with C = z1n^T z2n / N (D x D).

    z1, z2: (N, D) features of two views. Each feature is standardized over the batch as BatchNorm
    without affine does in training: (z - mean) / sqrt(var + eps), var the biased (1/N) variance.
    """
    z1n = (z1 - z1.mean(0)) / (z1.var(0, unbiased=False) + eps).sqrt()
    z2n = (z2 - z2.mean(0)) / (z2.var(0, unbiased=False) + eps).sqrt()
    c = z1n.T @ z2n / z1.shape[0]                                  # (D, D) cross-correlation
    on_diag = (1 - c.diagonal()).pow(2).sum()
    off_diag = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


def nt_xent_loss(z1, z2, temperature=0.5):
    """SimCLR loss over the 2N samples: for each, -log softmax over the other 2N - 1 of the cosine
    similarities / temperature, evaluated at its positive (the other view of the same image)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)                  # (2N, D) unit vectors
    sim = z @ z.T / temperature                                     # (2N, 2N)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # i <-> i + N
    return F.cross_entropy(sim, positives)
