"""Statistics of results that vary for two reasons: which base model they were built on (a diffusion
model or a pretrained GAN, the expensive draw) and which seed customized or transferred it (the
cheap one).

A result is a value per (base, seed). Two summaries:

  variance_components   grand mean, spread between bases and spread within a base (one-way random
                        effects, ANOVA estimator; e.g. Searle, Casella & McCulloch 1992,
                        "Variance Components", Sec. 3.5):
                            MS_w = sum_b sum_s (x_bs - m_b)^2 / (N - B)
                            MS_b = sum_b n_b (m_b - m)^2 / (B - 1),
                            n0 = (N - sum_b n_b^2 / N) / (B - 1)
                            sd_within = sqrt(MS_w),  sd_between = sqrt(max(0, (MS_b - MS_w) / n0))
                        with m_b a base's mean, m the mean over all N values.
  paired                a method against its baseline on the same base and seed: d_bs = a_bs - b_bs,
                        each base's mean difference d_b, their mean D and its standard error over
                        bases SE = sd(d_b) / sqrt(B), and on how many bases the difference has each
                        sign. The seeds of one base share that base, so they are not independent
                        draws of the experiment: the bases are. With a single base, SE is over its
                        seeds and says so.

One more for a relation between two measures:

  line_fit              least squares y = intercept + slope x, and Pearson's
                        r = s_xy / sqrt(s_xx s_yy).
"""
from __future__ import annotations

import math


def finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_sd(values) -> tuple[float, float] | None:
    """Mean and sample standard deviation (n - 1) of the finite values; sd 0 for one value;
    None for none."""
    values = finite(values)
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def by_base(values: dict) -> dict[str, list[float]]:
    """{(base, seed): value} -> {base: [finite values]} (bases with none left out)."""
    out: dict[str, list[float]] = {}
    for (base, _), v in sorted(values.items()):
        if v is not None and math.isfinite(v):
            out.setdefault(base, []).append(float(v))
    return out


def variance_components(values: dict) -> dict | None:
    """{(base, seed): value} -> {'mean', 'between_sd' (None with one base),
    'within_sd' (None without repeats), 'n_bases', 'n'} (the module docstring's estimator);
    None if no value is finite."""
    groups = by_base(values)
    xs = [v for g in groups.values() for v in g]
    if not xs:
        return None
    n, b = len(xs), len(groups)
    mean = sum(xs) / n
    ss_within = sum((v - sum(g) / len(g)) ** 2 for g in groups.values() for v in g)
    within = math.sqrt(ss_within / (n - b)) if n > b else None
    between = None
    if b > 1:
        ms_between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values()) / (b - 1)
        n0 = (n - sum(len(g) ** 2 for g in groups.values()) / n) / (b - 1)
        between = math.sqrt(max(0.0, (ms_between - (within or 0.0) ** 2) / n0))
    return {"mean": mean, "between_sd": between, "within_sd": within, "n_bases": b, "n": n}


def paired(a: dict, b: dict) -> dict | None:
    """a - b on every (base, seed) both have (module docstring): {'mean', 'se',
    'se_over' ('bases' or 'seeds of one base'), 'n_bases', 'n_pairs', 'positive', 'negative'
    (bases whose mean difference has that sign), 'per_base' {base: mean difference},
    'differences' {"base/seed": d}}; None without a pair."""
    common = sorted(k for k in set(a) & set(b) if a[k] is not None and b[k] is not None
                    and math.isfinite(a[k]) and math.isfinite(b[k]))
    if not common:
        return None
    d = {k: a[k] - b[k] for k in common}
    groups = by_base(d)
    per_base = {base: sum(v) / len(v) for base, v in groups.items()}
    if len(per_base) > 1:
        mean, sd = mean_sd(per_base.values())
        se, over = sd / math.sqrt(len(per_base)), "bases"
    else:
        mean, sd = mean_sd(d.values())
        se, over = (sd / math.sqrt(len(d)) if len(d) > 1 else None), "seeds of one base"
    return {"mean": mean, "se": se, "se_over": over, "n_bases": len(per_base), "n_pairs": len(d),
            "positive": sum(v > 0 for v in per_base.values()),
            "negative": sum(v < 0 for v in per_base.values()),
            "per_base": per_base,
            "differences": {f"{base}/{seed}": v for (base, seed), v in d.items()}}


def line_fit(xs, ys) -> dict | None:
    """Least-squares line through the points (xs, ys) and Pearson's r; None where fewer than 3
    points or either variable is constant."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    if sxx == 0 or syy == 0:
        return None
    slope = sxy / sxx
    return {"n": n, "slope": slope, "intercept": my - slope * mx, "r": sxy / math.sqrt(sxx * syy)}
