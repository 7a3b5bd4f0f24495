"""The results tables, as markdown (the docs) and HTML (the report), and the sentence under each
one, written from its numbers.

A cell holds one condition's figure over base models and seeds (eval.stats.variance_components):
    '12.3'                   one run
    '12.3 +- 1.4'            one base model, several seeds: mean +- sd over the seeds
    '12.3 [b 2.1 | w 1.4]'   several base models: grand mean [sd between bases | sd within a base]
and the N column says 'bases x seeds'.
"""
from __future__ import annotations

import html

from eval.stats import variance_components
from eval.verdicts import describe

# (metric, header, scale, digits) of each table's columns
PAPER1_SEMANTIC = [
    ("fidelity", "concept recognised (%)", 100, 0),
    ("fidelity_g1", "concept recognised, guidance 1 (%)", 100, 0),
    ("fidelity_classifier", "concept, diff. classifier (%)", 100, 0),
    ("anchored_change", "anchored: accuracy change (pts)", 100, 1),
    ("anchored_flip", "anchored: flip rate (%)", 100, 1),
    ("heldout_change", "held-out classes: accuracy change (pts)", 100, 1),
    ("heldout_flip", "held-out classes: flip rate (%)", 100, 1),
    ("template_change", "held-out wording: accuracy change (pts)", 100, 1),
    ("template_flip", "held-out wording: flip rate (%)", 100, 1),
    ("heldout_called_anchored", "held-out classes called anchored (%)", 100, 0),
    ("heldout_margin", "held-out classes: margin change (x1000)", 1000, 2),
    ("anchored_margin", "anchored: margin change (x1000)", 1000, 2),
    ("leakage", "held-out samples called the concept (%)", 100, 1)]
PAPER1_MECHANISM = [
    ("shared_shift", "every prompt's error change: shared shift (x1000)", 1000, 2),
    ("anchored_specific", "anchored prompts: own part (x1000)", 1000, 2),
    ("heldout_specific", "held-out prompts: own part (x1000)", 1000, 2)]
PAPER1_APPEARANCE = [
    ("cdi_median", "pairwise CDI, median", 1, 1), ("set_cdi", "set CDI", 1, 2),
    ("set_delta_e", "set mean-colour delta-E", 1, 2),
    ("reassigned", "reassigned pairs (%)", 100, 0),
    ("cdi_share_reassigned", "CDI share of reassigned pairs (%)", 100, 0),
    ("attribute_compliance", "attribute compliance (%)", 100, 1),
    ("fd_per_class", "FD-eval per class", 1, 2)]
PAPER2 = [
    ("trainable", "trainable (% of G)", 100, 0), ("kid", "per-class KID (x1000)", 1000, 2),
    ("fd_eval", "FD-eval", 1, 2), ("fd_eval_floor", "FD-eval floor", 1, 2),
    ("precision", "precision", 1, 2),
    ("recall", "recall", 1, 2), ("density", "density", 1, 2), ("coverage", "coverage", 1, 2),
    ("acc_targets", "acc. among targets (%)", 100, 1),
    ("real_acc_targets", "real images among targets (%)", 100, 1),
    ("nn_ratio", "NN ratio", 1, 2), ("separation", "class separation", 1, 2),
    ("within", "within-class spread", 1, 0),
    ("start_ratio", "start FD ratio", 1, 2)]
SCALES = {m: scale for m, _, scale, _ in
          PAPER1_SEMANTIC + PAPER1_MECHANISM + PAPER1_APPEARANCE + PAPER2}


def unpack(values: dict) -> dict:
    """{condition: {metric: {'b0/s1': v}}} as stored in JSON
    -> {condition: {metric: {('b0', '1'): v}}}."""
    return {c: {m: {tuple(k.split("/s")): v for k, v in vs.items()} for m, vs in ms.items()}
            for c, ms in values.items()}


def cell(values: dict, scale: float = 1.0, digits: int = 1) -> str:
    """One condition's figure (module docstring); '-' where it has none."""
    vc = variance_components(values)
    if vc is None:
        return "-"

    def num(x):
        return f"{round(scale * x, digits) + 0.0:.{digits}f}"     # + 0.0: no '-0.0'
    text = num(vc["mean"])
    if vc["n_bases"] > 1:
        within = "-" if vc["within_sd"] is None else num(vc["within_sd"])
        return f"{text} [b {num(vc['between_sd'])} | w {within}]"
    return text if vc["within_sd"] is None else f"{text} +- {num(vc['within_sd'])}"


def n_label(values: dict) -> str:
    """'3 x 2': base models x seeds per base (seeds as a range where bases differ)."""
    bases: dict[str, int] = {}
    for base, _ in values:
        bases[base] = bases.get(base, 0) + 1
    seeds = sorted(set(bases.values()))
    return (f"{len(bases)} x {seeds[0] if len(seeds) == 1 else f'{seeds[0]}-{seeds[-1]}'}"
            if bases else "0")


def rows(values: dict, columns, order=None) -> list[list[str]]:
    """One row per condition: its name, N, and a cell per column."""
    names = sorted(values, key=order) if order else list(values)
    out = []
    for name in names:
        metrics = values[name]
        first = next((v for v in metrics.values() if v), {})
        out.append([name, n_label(first)] + [cell(metrics.get(m, {}), scale, digits)
                                             for m, _, scale, digits in columns])
    return out


def header(columns, first: str) -> list[str]:
    return [first, "N (bases x seeds)"] + [h for _, h, _, _ in columns]


def markdown_table(head: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])


def html_table(head: list[str], body: list[list]) -> str:
    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    rest = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in body)
    # a table wider than the page scrolls on its own
    return f'<div class="wide"><table><tr>{top}</tr>{rest}</table></div>'


VERDICT_HEADER = ["claim", "world", "N (bases x seeds)", "paired difference +- SE", "bases won",
                  "verdict"]


def verdict_body(rows_: list[dict]) -> list[list[str]]:
    """The verdict table's rows: claim, world, N, paired difference +- SE (in the metric's display
    unit), bases in the claimed direction, verdict."""
    body = []
    for r in rows_:
        s = r["stat"]
        n = "-" if s is None else f"{s['n_bases']} x {s['n_pairs'] / max(1, s['n_bases']):g}"
        won = "-" if s is None or not r["direction"] else \
            f"{s['positive'] if r['direction'] > 0 else s['negative']} of {s['n_bases']}"
        body.append([r["claim"], r["world"], n, describe(r, SCALES.get(r["metric"], 1.0)), won,
                     r["verdict"]])
    return body


def verdict_markdown(rows_: list[dict]) -> str:
    body = verdict_body(rows_)
    return (markdown_table(VERDICT_HEADER, body) if body
            else "no claim has both of its conditions run yet")


def verdict_sentences(rows_: list[dict]) -> list[str]:
    """One sentence per claim, from its numbers: 'full / none minus floor, held-out flip rate:
    +14.20 +- 2.10 (bases), 3 of 3 bases in the claimed direction: supported.'"""
    parts = []
    for r in rows_:
        s = r["stat"]
        if s is None:
            continue
        sign = r["direction"]
        won = "" if not sign else (f", {s['positive'] if sign > 0 else s['negative']} of "
                                   f"{s['n_bases']} bases in the claimed direction")
        parts.append(f"{r['method']} minus {r['baseline']}, {r['metric']}: "
                     f"{describe(r, SCALES.get(r['metric'], 1))}"
                     f"{won}: {r['verdict']} ({r['claim']}).")
    return parts


def table_sentence(values: dict, metric: str, label: str, scale: float, digits: int,
                   low_is_good: bool) -> str:
    """'Lowest per-class KID (x1000): finetune k=10 (1.23); highest: scratch k=10 (4.56).' from the
    means."""
    means = {c: variance_components(m.get(metric, {})) for c, m in values.items()}
    means = {c: v["mean"] for c, v in means.items() if v is not None}
    if len(means) < 2:
        return ""
    ordered = sorted(means, key=means.get, reverse=not low_is_good)
    fmt = lambda c: f"{c} ({round(scale * means[c], digits) + 0.0:.{digits}f})"  # noqa: E731
    return (f"Best {label}: {fmt(ordered[0])}; worst: {fmt(ordered[-1])} "
            f"(means over every base and seed).")
