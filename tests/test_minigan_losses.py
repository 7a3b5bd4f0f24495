"""minigan losses: GAN losses, R1, Barlow Twins, NT-Xent, checked against closed forms."""
import math

import torch

from minigan.losses import (barlow_twins_loss, d_logistic_loss, g_nonsaturating_loss, nt_xent_loss,
                            r1_penalty)


def test_logistic_losses_closed_form():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    sp = lambda t: math.log1p(math.exp(t))
    assert math.isclose(d_logistic_loss(real, fake).item(),
                        (sp(0) + sp(-2)) / 2 + (sp(0) + sp(-1)) / 2, rel_tol=1e-6)
    assert math.isclose(g_nonsaturating_loss(fake).item(), (sp(0) + sp(1)) / 2, rel_tol=1e-6)


def test_r1_quadratic_discriminator():
    torch.manual_seed(0)
    A = torch.randn(5, 12)
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    logits = 0.5 * (x.flatten(1) @ A.T).pow(2).sum(1)          # D(x) = 0.5 ||A x||^2
    grad = x.detach().flatten(1) @ A.T @ A                      # dD/dx = A^T A x
    expected = 10.0 / 2 * grad.pow(2).sum(1).mean()
    penalty = r1_penalty(logits, x, gamma=10.0)
    assert torch.allclose(penalty, expected, rtol=1e-5)
    # differentiable (create_graph): with M = A^T A, the penalty is 5 mean_i ||M x_i||^2, whose
    # gradient is (10 / 4) M^2 x_i for each of the 4 samples
    penalty.backward()
    M = A.T @ A
    assert torch.allclose(x.grad.flatten(1), 10.0 / 4 * x.detach().flatten(1) @ M @ M, rtol=1e-4)


def test_r1_linear_discriminator():
    a = torch.tensor([1.0, -2.0, 3.0])
    x = torch.randn(7, 3, requires_grad=True)
    assert torch.allclose(r1_penalty(x @ a, x, gamma=4.0), torch.tensor(2.0 * 14.0))


def test_barlow_twins_hand_computed():
    z1 = [[1.0, 2.0], [2.0, 0.0], [4.0, 1.0]]                  # N = 3 samples, D = 2 features
    z2 = [[0.0, 1.0], [1.0, 3.0], [1.0, 2.0]]
    lam, eps, n = 0.1, 1e-5, 3

    def standardize(col):
        m = sum(col) / n
        v = sum((c - m) ** 2 for c in col) / n
        return [(c - m) / math.sqrt(v + eps) for c in col]

    a = [standardize([row[j] for row in z1]) for j in range(2)]
    b = [standardize([row[j] for row in z2]) for j in range(2)]
    C = [[sum(a[i][k] * b[j][k] for k in range(n)) / n for j in range(2)] for i in range(2)]
    expected = sum((1 - C[i][i]) ** 2 for i in range(2)) + lam * (C[0][1] ** 2 + C[1][0] ** 2)
    got = barlow_twins_loss(torch.tensor(z1), torch.tensor(z2), lambda_offdiag=lam, eps=eps)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)
    assert expected > 0.1


def test_barlow_twins_zero_for_whitened_identical_views():
    # mean 0, var 1, orthogonal
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert barlow_twins_loss(z, z, eps=0.0).item() < 1e-10
    assert barlow_twins_loss(z, z).item() < 1e-4
    assert barlow_twins_loss(z, z[[1, 0, 3, 2]]).item() > 0.5  # wrong pairing is penalized


def test_nt_xent_two_pairs_hand_computed():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # every anchor: positive similarity 1, two negatives of similarity 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert math.isclose(nt_xent_loss(z, 3 * z, temperature=t).item(), expected, rel_tol=1e-6)


def test_nt_xent_identical_views_beat_random_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    assert nt_xent_loss(z, z).item() < nt_xent_loss(z, torch.randn(16, 8)).item()
