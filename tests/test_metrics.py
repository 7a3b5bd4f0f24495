"""Known-answer tests for eval/metrics.py: Frechet distance, KID, precision/recall."""

import math

import numpy as np
import pytest
import torch

from eval.metrics import (feature_statistics, fd_from_features, frechet_distance,
                          kernel_inception_distance, precision_recall)


def _random_spd(rng, d):
    """A random symmetric positive-definite (d, d) matrix."""
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _correlated_samples(rng, n, d):
    mix = rng.standard_normal((d, d))
    return rng.standard_normal((n, d)) @ mix + rng.standard_normal(d)


# --------------------------------------------------------------------------------------------------
# Frechet distance

def test_feature_statistics_match_numpy():
    x = _correlated_samples(np.random.default_rng(0), 300, 5)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), atol=1e-12)


def test_fd_of_a_set_with_itself_is_zero():
    x = _correlated_samples(np.random.default_rng(1), 500, 16)
    scale = np.trace(np.cov(x, rowvar=False))
    assert fd_from_features(x, x) < 1e-6 * scale


def test_fd_diagonal_covariances_closed_form():
    # commuting covariances: tr sqrt(S1 S2) = sum sqrt(s1 s2), so FD = ||dmu||^2 + sum
    # (sqrt(s1) - sqrt(s2))^2
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    s1, s2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert (frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
            == pytest.approx(expected, rel=1e-10))


def test_fd_non_commuting_matches_eigenvalues_of_product():
    # independent route: eigenvalues of the non-symmetric product S1 S2 (real and positive for SPD
    # S1, S2)
    rng = np.random.default_rng(3)
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_2x2_analytic():
    # 2x2 M with eigenvalues l1, l2 >= 0:
    # tr sqrt(M) = sqrt(l1) + sqrt(l2) = sqrt(tr M + 2 sqrt(det M))
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[1.0, -0.4], [-0.4, 3.0]])
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    expected = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt  # ||dmu||^2 = 1
    assert frechet_distance([0.0, 0.0], s1, [1.0, 0.0], s2) == pytest.approx(expected, rel=1e-12)


def test_fd_is_symmetric_and_accepts_torch():
    rng = np.random.default_rng(4)
    a, b = _correlated_samples(rng, 400, 10), _correlated_samples(rng, 300, 10)
    fd_ab = fd_from_features(a, b)
    assert fd_ab > 0
    assert fd_from_features(b, a) == pytest.approx(fd_ab, rel=1e-9)
    a32 = torch.from_numpy(a).float()
    assert fd_from_features(a32, torch.from_numpy(b)) == pytest.approx(fd_ab, rel=1e-5)


def test_fd_from_samples_approaches_closed_form():
    rng = np.random.default_rng(5)
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[1.0, -0.4], [-0.4, 3.0]])
    mu2 = np.array([1.0, -0.5])
    n = 200_000
    a = rng.multivariate_normal(np.zeros(2), s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    expected = frechet_distance(np.zeros(2), s1, mu2, s2)
    assert fd_from_features(a, b) == pytest.approx(expected, rel=0.02)


def test_fd_rank_deficient_covariance():
    # N < D: singular covariances must not produce NaN, a negative value, or a nonzero self-distance
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((10, 64)), rng.standard_normal((12, 64)) + 0.5
    fd = fd_from_features(a, b)
    assert math.isfinite(fd) and fd >= 0
    assert fd_from_features(a, a) < 1e-8 * np.trace(np.cov(a, rowvar=False))


def test_fd_rejects_bad_input():
    with pytest.raises(ValueError, match="dimensions|shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        feature_statistics(np.full((5, 3), np.nan))


# --------------------------------------------------------------------------------------------------
# KID

def _mmd2_unbiased_loops(x, y):
    """The unbiased MMD^2 written as explicit sums, for checking the vectorized version."""
    (m, d), n = x.shape, len(y)
    k = lambda u, v: (u @ v / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_explicit_sums():
    """'all' is the unbiased estimate on every sample, by the explicit double sums (also for unequal
    sizes)."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 3)) + 0.3
    kid = kernel_inception_distance(x, y, subset_size=8, n_subsets=3)
    assert kid["all"] == pytest.approx(_mmd2_unbiased_loops(x, y), rel=1e-10)
    z = rng.standard_normal((5, 3))
    assert (kernel_inception_distance(x, z, n_subsets=0)["all"]
            == pytest.approx(_mmd2_unbiased_loops(x, z), rel=1e-10))


def test_kid_subsets_differ_so_their_spread_is_real():
    """Subsets are capped at half the smaller set: a 'subset' of all 8 samples would be the same set
    every time, with a spread of exactly 0 whatever the data."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 3)) + 0.3
    kid = kernel_inception_distance(x, y, subset_size=1000, n_subsets=20)
    assert kid["subset_size"] == 4 and kid["std"] > 0


def test_kid_is_unbiased_on_two_sets_of_one_distribution():
    """Over 200 pairs of small sets (n = 20, where FD's bias is large) from one distribution, the
    mean of the estimate is 0 within 3 standard errors."""
    rng = np.random.default_rng(1)
    estimates = [kernel_inception_distance(rng.standard_normal((20, 8)),
                                           rng.standard_normal((20, 8)), n_subsets=0)["all"]
                 for _ in range(200)]
    mean, se = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean) < 3 * se


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    same = kernel_inception_distance(a, b, subset_size=200, n_subsets=20)
    shifted = kernel_inception_distance(a, b + 0.5, subset_size=200, n_subsets=20)
    assert abs(same["mean"]) < 3 * same["std"]
    assert shifted["mean"] > 10 * shifted["std"] and shifted["mean"] > 100 * abs(same["mean"])


def test_kid_deterministic_given_seed_and_counts():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((150, 4)), rng.standard_normal((90, 4))
    first = kernel_inception_distance(a, b, subset_size=1000, n_subsets=5, seed=3)
    assert first == kernel_inception_distance(a, b, subset_size=1000, n_subsets=5, seed=3)
    assert (first["mean"]
            != kernel_inception_distance(a, b, subset_size=50, n_subsets=5, seed=4)["mean"])
    assert ((first["n_a"], first["n_b"], first["subset_size"], first["n_subsets"])
            == (150, 90, 45, 5))


# --------------------------------------------------------------------------------------------------
# Precision / recall

def _precision_recall_bruteforce(real, fake, k):
    """The Kynkaanniemi et al. definitions on full distance matrices, via np.sort."""
    dist = lambda x, y: np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    r_real = np.sort(dist(real, real), axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(fake, real)  # (n_fake, n_real)
    return (d <= r_real[None, :]).any(1).mean(), (d <= r_fake[:, None]).any(0).mean()


def test_precision_recall_of_a_set_with_itself():
    x = np.random.default_rng(10).standard_normal((300, 8))
    pr = precision_recall(x, x, k=3)
    assert pr["precision"] == 1.0 and pr["recall"] == 1.0
    assert (pr["k"], pr["n_real"], pr["n_fake"]) == (3, 300, 300)


def test_precision_recall_of_far_apart_sets():
    rng = np.random.default_rng(11)
    pr = precision_recall(rng.standard_normal((200, 8)), rng.standard_normal((150, 8)) + 100.0)
    assert pr["precision"] == 0.0 and pr["recall"] == 0.0


def test_precision_half_of_fakes_on_the_real_manifold():
    rng = np.random.default_rng(12)
    real = rng.standard_normal((200, 8))
    fake = np.concatenate([real[:100], rng.standard_normal((100, 8)) + 100.0])
    assert precision_recall(real, fake)["precision"] == 0.5


def test_precision_recall_matches_bruteforce_and_batching():
    rng = np.random.default_rng(13)
    real, fake = rng.standard_normal((120, 5)), rng.standard_normal((90, 5)) * 1.5 + 0.7
    p, r = _precision_recall_bruteforce(real, fake, k=4)
    assert 0 < p < 1 and 0 < r < 1
    for batch_size in (7, 1024):
        pr = precision_recall(real, fake, k=4, batch_size=batch_size)
        assert pr["precision"] == pytest.approx(p) and pr["recall"] == pytest.approx(r)
