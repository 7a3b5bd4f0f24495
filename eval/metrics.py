"""Distances between two sets of features: Frechet distance, KID, and k-NN precision/recall.

Everything here is model-agnostic: inputs are feature matrices of shape (N, D), as numpy arrays or
torch tensors on any device (statistics, KID and precision/recall run on the features' device; the
FD matrix square root on the CPU). All arithmetic is float64. Conventions:
`feature_statistics` returns numpy float64 arrays (so reference statistics can be saved with
np.savez), every other function returns Python floats (in a dict where there is more than one
number).

- Frechet distance (FD): the 2-Wasserstein distance between Gaussians fitted to the two sets
  (Dowson & Landau 1982); with Inception features it is FID (Heusel et al. 2017).
- Kernel Inception Distance (KID): unbiased MMD^2 with a cubic polynomial kernel
  (Binkowski et al. 2018).
- Precision/recall: the k-nearest-neighbour manifold estimate of Kynkaanniemi et al. 2019.
- Density/coverage: Naeem et al. 2020's fidelity and diversity, from the real samples' k-NN balls
  only.
"""

import torch


def _as_features(x, name="features"):
    """(N, D) numpy array or torch tensor -> float64 torch tensor (on the tensor's own device)."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or Inf")
    return x


def _check_same_dim(a, b):
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")


# --------------------------------------------------------------------------------------------------
# Frechet distance

def feature_statistics(features):
    """Mean and unbiased covariance of (N, D) features -> (mu (D,), sigma (D, D)), numpy float64.

    sigma = (X - mu)^T (X - mu) / (N - 1), as np.cov. Needs N >= 2; with N <= D sigma is
    rank-deficient, which frechet_distance handles.
    """
    x = _as_features(features)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n}")
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def _sqrtm_psd(s):
    """Symmetric square root of a symmetric PSD matrix via eigh: V diag(sqrt(max(w, 0))) V^T."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def trace_sqrt_product(sigma1, sigma2):
    """tr((S1 S2)^{1/2}) for symmetric PSD S1, S2, without a general (non-symmetric) matrix square
    root.

    S1 S2 = S1^{1/2} (S1^{1/2} S2) and M = (S1^{1/2} S2) S1^{1/2} = S1^{1/2} S2 S1^{1/2} have the
    same nonzero eigenvalues (AB and BA always do), and M is symmetric PSD. So tr((S1 S2)^{1/2}) is
    the sum of sqrt(eigenvalues of M), computed with eigh; negative round-off eigenvalues are
    clamped to 0. No inverse is taken, so singular covariances (N <= D) are fine.
    """
    r = _sqrtm_psd(sigma1)
    m = r @ sigma2 @ r
    m = (m + m.T) / 2  # symmetric up to round-off; make it exactly so for eigvalsh
    return torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; FID,
    Heusel et al. 2017):

        d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

    Inputs are numpy arrays or torch tensors; computed in float64; returns a float (clamped at 0,
    since round-off can push a zero distance slightly negative).
    """
    mu1, mu2 = (torch.as_tensor(m).to(torch.float64).cpu() for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s).to(torch.float64).cpu() for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {tuple(mu1.shape)}, sigma1 {tuple(s1.shape)}, "
                         f"mu2 {tuple(mu2.shape)}, sigma2 {tuple(s2.shape)}")
    diff = mu1 - mu2
    fd = diff @ diff + s1.trace() + s2.trace() - 2 * trace_sqrt_product(s1, s2)
    return max(fd.item(), 0.0)


def fd_from_features(a, b):
    """Frechet distance between Gaussians fitted to feature sets a (N_a, D) and b (N_b, D)."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


# --------------------------------------------------------------------------------------------------
# Kernel Inception Distance

def _polynomial_kernel(x, y):
    """Cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 for all pairs: (n, d), (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 between samples x (m, d) and y (n, d) (Gretton et al. 2012, "A kernel
    two-sample test", Lemma 6):

        MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
                - 2 sum_{i,j} k(x_i, y_j) / (mn)

    Its expectation is 0 when the two distributions are equal, so it can be negative.
    """
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    return ((k_xx.sum() - k_xx.trace()) / (m * (m - 1))
            + (k_yy.sum() - k_yy.trace()) / (n * (n - 1)) - 2 * k_xy.mean())


def kernel_inception_distance(a, b, subset_size=1000, n_subsets=100, seed=0):
    """KID (Binkowski et al. 2018): unbiased MMD^2 with kernel (x.y/d + 1)^3.

    'all' is the estimate on every sample (unbiased at any size: the figure to compare); 'mean' and
    'std' are over n_subsets random subsets of subset_size rows of each set, drawn without
    replacement. The subset size is capped at half the smaller set, so that subsets differ: a
    'subset' of a whole set is that set every time, and its spread would read 0. std is the
    population standard deviation of the per-subset estimates (the estimator's spread at that subset
    size). Deterministic given seed.
    """
    a, b = _as_features(a, "a"), _as_features(b, "b")
    _check_same_dim(a, b)
    b = b.to(a.device)
    n_a, n_b = a.shape[0], b.shape[0]
    m = min(subset_size, n_a // 2, n_b // 2)
    if min(n_a, n_b) < 2 or (n_subsets and m < 2):
        raise ValueError(f"KID needs at least 2 samples per set (4 with subsets), got {n_a} and "
                         f"{n_b}")
    gen = torch.Generator().manual_seed(seed)
    estimates = torch.empty(n_subsets, dtype=torch.float64)
    for i in range(n_subsets):
        idx_a = torch.randperm(n_a, generator=gen)[:m].to(a.device)
        idx_b = torch.randperm(n_b, generator=gen)[:m].to(a.device)
        estimates[i] = mmd2_unbiased(a[idx_a], b[idx_b])
    return {"all": mmd2_unbiased(a, b).item(),
            "mean": estimates.mean().item() if n_subsets else None,
            "std": estimates.std(unbiased=False).item() if n_subsets else None, "n_a": n_a,
            "n_b": n_b, "subset_size": m, "n_subsets": n_subsets}


# --------------------------------------------------------------------------------------------------
# Precision and recall (Kynkaanniemi et al. 2019)

def _squared_distances(x, y):
    """Pairwise squared Euclidean distances ||x_i||^2 + ||y_j||^2 - 2 x_i.y_j:
    (n, d), (m, d) -> (n, m)."""
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return d2.clamp(min=0)


def _knn_radii(x, k, batch_size):
    """Squared distance from each row of x to its k-th nearest other row of x -> (n,).

    Each row's distance to itself (0) is among its own row's distances, so the k-th neighbour
    excluding itself is the (k+1)-th smallest value.
    """
    radii = [_squared_distances(chunk, x).kthvalue(k + 1, dim=1).values
             for chunk in x.split(batch_size)]
    return torch.cat(radii)


def precision_recall(real, fake, k=3, batch_size=1024):
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    The real manifold is the union of balls around each real sample with radius the distance to its
    k-th nearest real neighbour; likewise for fake. precision = share of fake samples inside the
    real manifold (inside at least one real ball); recall = share of real samples inside the fake
    manifold. Distances are computed batch_size rows at a time, so memory is O(batch_size * N)
    rather than O(N^2).
    Returns {'precision', 'recall', 'k', 'n_real', 'n_fake'}.
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _check_same_dim(real, fake)
    fake = fake.to(real.device)
    n_real, n_fake = real.shape[0], fake.shape[0]
    if min(n_real, n_fake) <= k:
        raise ValueError(f"need more than k={k} samples per set, got {n_real} real and {n_fake} "
                         "fake")
    r_real, r_fake = _knn_radii(real, k, batch_size), _knn_radii(fake, k, batch_size)
    fake_in_real = torch.zeros(n_fake, dtype=torch.bool, device=real.device)
    real_in_fake = torch.zeros(n_real, dtype=torch.bool, device=real.device)
    for start in range(0, n_fake, batch_size):
        fake_chunk = fake[start:start + batch_size]
        d2 = _squared_distances(fake_chunk, real)  # (b, n_real)
        fake_in_real[start:start + batch_size] = (d2 <= r_real[None, :]).any(dim=1)
        real_in_fake |= (d2 <= r_fake[start:start + batch_size, None]).any(dim=0)
    return {"precision": fake_in_real.double().mean().item(),
            "recall": real_in_fake.double().mean().item(), "k": k, "n_real": n_real,
            "n_fake": n_fake}


# --------------------------------------------------------------------------------------------------
# Density and coverage (Naeem et al. 2020)

def density_coverage(real, fake, k=5, batch_size=1024):
    """Density and coverage (Naeem, Oh, Uh, Choi, Yoo 2020, "Reliable Fidelity and Diversity Metrics
    for Generative Models", Eq. 3-4), with B(x, r) the ball of radius r around x and NND_k(x_i) the
    distance from real x_i to its k-th nearest other real sample:

        density  = 1/(k M) sum_j sum_i 1[ y_j in B(x_i, NND_k(x_i)) ]
                   (about 1 when fake matches real)
        coverage = 1/N sum_i 1[ exists j: y_j in B(x_i, NND_k(x_i)) ]
                   (share of real balls hit)

    for N real samples x and M fake samples y. Unlike precision and recall they use only the real
    manifold, so a few far-out fake samples cannot inflate them. Returns {'density', 'coverage',
    'k', 'n_real', 'n_fake'}.
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _check_same_dim(real, fake)
    fake = fake.to(real.device)
    if real.shape[0] <= k:
        raise ValueError(f"need more than k={k} real samples, got {real.shape[0]}")
    radii = _knn_radii(real, k, batch_size)  # (N,) squared NND_k of every real sample
    # fake samples in each ball
    hits = torch.zeros(real.shape[0], dtype=torch.float64, device=real.device)
    for start in range(0, fake.shape[0], batch_size):
        # (b, N)
        inside = _squared_distances(fake[start:start + batch_size], real) <= radii[None, :]
        hits += inside.sum(dim=0)
    return {"density": (hits.sum() / (k * fake.shape[0])).item(),
            "coverage": (hits > 0).double().mean().item(), "k": k, "n_real": real.shape[0],
            "n_fake": fake.shape[0]}
