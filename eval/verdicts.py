"""How a claim is decided: rules written down before the runs, applied to paired differences
(eval.stats).

A claim compares a method with its baseline on the same base model and seed, in one direction (the
method's figure should be higher, or lower). With D the mean over bases of the per-base mean
difference and SE its standard error over bases:

  supported   D is beyond 2 SE in the claimed direction, and so is the mean difference of every base
  refuted     D is beyond 2 SE the other way, and so is the mean difference of every base
  unresolved  anything else (including a single base model, whose seeds do not vary the base)

A claim of equivalence ("the regularized model's held-out flip rate is at the floor") is decided on
the interval D +- 2 SE: supported if it holds 0 and the condition's concept fidelity is at least 60%
(a model that learned nothing would also sit at the floor), refuted if the whole interval lies above
0 on every base, unresolved otherwise. Such a claim is only as sharp as its SE: the table prints the
interval.

CLAIMS lists every claim; `verdicts(values)` applies the rules to the per-run values that
eval.results gathers: {claim's world: {condition: {metric: {(base, seed): value}}}}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from eval.stats import paired

# equivalence to the floor counts only if the concept is learned at least this well
FIDELITY_FLOOR = 0.6


@dataclass(frozen=True)
class Claim:
    paper: int
    text: str
    metric: str      # a column of eval.results (drift or transfer)
    method: str      # a condition
    baseline: str    # the condition it is paired with ("floor": the base model against itself)
    direction: int   # +1: the method's figure should be higher; -1: lower; 0: equal (equivalence)


def paper1_claims(methods) -> list[Claim]:
    out = []
    for m in methods:
        out += [Claim(1, f"{m}: customizing changes held-out classes' predictions beyond the floor",
                      "heldout_flip", f"{m} / none", "floor", +1),
                Claim(1, f"{m}: functional regularization lowers the held-out flip rate",
                      "heldout_flip", f"{m} / functional", f"{m} / none", -1),
                Claim(1, f"{m}: with functional regularization the held-out flip rate is at "
                         "the floor",
                      "heldout_flip", f"{m} / functional", "floor", 0),
                Claim(1, f"{m}: functional regularization lowers the held-out margin change",
                      "heldout_margin", f"{m} / functional", f"{m} / none", -1)]
    return out


def paper2_claims(ks, heads) -> list[Claim]:
    out = []
    for k in ks:
        for head in heads:
            row = f"hypermod+selfinit+ssl-{head}"
            out += [Claim(2, f"k={k}, {head} head: lower per-class KID than finetuning",
                          "kid", f"{row} k={k}", f"finetune k={k}", -1),
                    Claim(2, f"k={k}, {head} head: higher coverage than finetuning",
                          "coverage", f"{row} k={k}", f"finetune k={k}", +1)]
    return out


def decide(stat: dict | None, direction: int, fidelity: float | None = None) -> str:
    """The rule of the module docstring for one paired difference."""
    if stat is None or stat["se"] is None or stat["se_over"] != "bases":
        return "unresolved"
    low, high = stat["mean"] - 2 * stat["se"], stat["mean"] + 2 * stat["se"]
    n = stat["n_bases"]
    if direction == 0:
        if low <= 0 <= high and fidelity is not None and fidelity >= FIDELITY_FLOOR:
            return "supported"
        return "refuted" if low > 0 and stat["positive"] == n else "unresolved"
    toward, away = ((stat["positive"], stat["negative"]) if direction > 0
                    else (stat["negative"], stat["positive"]))
    if (low > 0 if direction > 0 else high < 0) and toward == n:
        return "supported"
    if (high < 0 if direction > 0 else low > 0) and away == n:
        return "refuted"
    return "unresolved"


def verdicts(world: str, values: dict, claims: list[Claim],
             fidelity: dict | None = None) -> list[dict]:
    """One row per claim whose conditions were run: the paired figure, its SE, the bases' signs,
    the verdict. values: {condition: {metric: {(base, seed): value}}};
    fidelity: {condition: mean concept fidelity}."""
    rows = []
    for c in claims:
        if c.method not in values or c.baseline not in values:
            continue
        stat = paired(values[c.method].get(c.metric, {}), values[c.baseline].get(c.metric, {}))
        fid = (fidelity or {}).get(c.method)
        rows.append({"paper": c.paper, "claim": c.text, "world": world, "metric": c.metric,
                     "method": c.method, "baseline": c.baseline, "direction": c.direction,
                     "stat": stat, "fidelity": fid, "verdict": decide(stat, c.direction, fid)})
    return rows


def describe(row: dict, scale: float) -> str:
    """'-12.30 +- 2.10 (bases)', the paired figure in the metric's display unit: 2 decimals, or
    as many as show the SE's first two digits ('+0.0113 +- 0.0022')."""
    s = row["stat"]
    if s is None:
        return "-"
    se = None if s["se"] is None else scale * s["se"]
    places = 2 if not se or se >= 0.1 else min(6, 1 - math.floor(math.log10(se)))
    shown = "-" if se is None else f"{se:.{places}f}"
    return f"{round(scale * s['mean'], places) + 0.0:+.{places}f} +- {shown} ({s['se_over']})"
