"""Benchmark of eval/metrics.py on CPU: how long FD, KID and precision/recall take at realistic
sizes.

FD on two sets of 10,000 x 2048 features (Inception-sized; feature_statistics and frechet_distance
timed separately), KID and precision/recall on 5,000 x 2048. The features are Gaussian noise: only
the timings mean anything. Run from the repository root:

    python -m bench.bench_fd --threads 2 --out runs/bench/fd.json
"""

import argparse
import os

import torch

from bench.common import hardware, save, timed

from eval.metrics import (feature_statistics, frechet_distance, kernel_inception_distance,
                          precision_recall)


def random_features(n, dim, shift, gen):
    """(n, dim) float32 features, like a network's output, with a mean shift so the distances are
    nonzero."""
    return torch.randn(n, dim, generator=gen) + shift


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/fd.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--n-fd", type=int, default=10_000)
    parser.add_argument("--n-kid", type=int, default=5_000,
                        help="samples per set, KID and precision/recall")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    a, b = (random_features(args.n_fd, args.dim, 0.0, gen),
            random_features(args.n_fd, args.dim, 0.05, gen))
    (stats_a, t_stats_a), (stats_b, t_stats_b) = (timed(feature_statistics, a),
                                                  timed(feature_statistics, b))
    fd, t_fd = timed(frechet_distance, *stats_a, *stats_b)

    a, b = a[:args.n_kid], b[:args.n_kid]
    kid, t_kid = timed(kernel_inception_distance, a, b)
    pr, t_pr = timed(precision_recall, a, b)

    result = {
        **hardware(torch.device("cpu")),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "dim": args.dim,
        "fd": {"n_a": args.n_fd, "n_b": args.n_fd, "value": fd,
               "feature_statistics_s_per_set": (t_stats_a + t_stats_b) / 2,
               "frechet_distance_s": t_fd},
        "kid": {**kid, "seconds": t_kid},
        "precision_recall": {**pr, "seconds": t_pr},
    }
    print(result)
    save(args.out, result)


if __name__ == "__main__":
    main()
