"""The results of a preset's runs as one self-contained HTML page, and as markdown tables.

Everything is read from what the stages wrote under runs/<preset>/ (eval.results: only runs whose
models are still the current ones); nothing here knows about models. The page needs nothing at view
time: charts are inline SVG (eval/svg.py), images are base64 data URIs, the CSS is inline, so it
opens without a network. Every chart shows the spread of its bars and, for drift, the floor (the
base model against itself); every table has a sentence under it written from its numbers.
"""
from __future__ import annotations

import base64
import datetime
import html
import platform
from pathlib import Path

from core.files import atomic_write, read_json
from eval.results import left_out_line, results_json
from eval.stats import variance_components
from eval.svg import bar_chart, curve_chart
from eval.tables import (PAPER1_APPEARANCE, PAPER1_MECHANISM, PAPER1_SEMANTIC, PAPER2, header,
                         html_table, markdown_table, VERDICT_HEADER, rows, table_sentence, unpack,
                         verdict_body, verdict_markdown, verdict_sentences)

STYLE = ("body{font-family:sans-serif;max-width:1700px;margin:2em auto;"
         "color:#222;line-height:1.4}\n"
         "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
         "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}"
         "td{white-space:nowrap}\n"
         ".pair{display:inline-block;white-space:nowrap;margin:0 2em 0.5em 0}"
         ".wide{overflow-x:auto}\n"
         "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
         ".note{color:#555;font-size:13px}\n"
         "figure{display:inline-block;margin:0.5em 1em 0.5em 0;vertical-align:top}"
         "figcaption{font-size:12px;color:#444}\n"
         "img{image-rendering:pixelated}.verdict{font-weight:bold}")

PAPER1_TABLES = (
    ("Semantic drift", PAPER1_SEMANTIC),
    ("Why held-out prompts lose: each prompt's denoising-error change (anchored wording)",
     PAPER1_MECHANISM),
    ("Appearance drift, held-out classes", PAPER1_APPEARANCE))
METHOD_ORDER, REG_ORDER = (("full", "full+prior", "lora", "custom", "ti"),
                           ("none", "functional", "l2"))
GROUPS = (("anchored", "anchored_flip"), ("held-out classes", "heldout_flip"),
          ("held-out wording", "template_flip"))
DRIFT_NOTE = (
    "Cells: one run; mean +- sd over seeds of one base model; or grand mean [b: sd between base "
    "models | w: sd within a base] with several. Semantic drift: the diffusion classifier of the "
    "base and of the customized model on the same real test images and noise; flip rate: share of "
    "images whose prediction changed. Anchored classes are the ones the functional regularizer's "
    "anchor prompts name; held-out classes no anchor names; the held-out wording is a caption "
    "template no anchor uses. Appearance, held-out classes: paired generations (same prompt, same "
    "initial noise); pairwise CDI (Colour Drift Index: sum over CIELAB channels of the per-pair "
    "1-D Wasserstein distance), median over pairs; set CDI and mean-colour delta-E compare a "
    "class's two image sets as distributions; reassigned pairs: drawn with another shape or "
    "background colour. Row 'floor' is the base model against itself (another noise bank; other "
    "seeds): the smallest drift a measurement of this size can show, a floor for flips and "
    "changes, and for the pairwise measures of unrelated images a ceiling.")
GAN_NOTE = (
    "Cells as above (base models here are pretrained GANs). Every figure is per target class "
    "against its real test images, then averaged. Per-class KID is unbiased (its expectation is 0 "
    "for a perfect generator) and is the headline; FD-eval is biased upwards at small sample "
    "counts, the more so for more diverse samples, and its floor is the FD between two sets of "
    "real images of the class at the same count. Precision / recall (k = 3) and density / "
    "coverage (k = 5) in evaluator features. Accuracy among targets: the evaluator's argmax among "
    "the target classes is the requested one, next to the same for the real test images (its "
    "ceiling). NN ratio: median distance of a sample to its class's nearest training image over "
    "the same for real test images (1: as far from the training images as new real data; below 1: "
    "nearer, towards copies; above: off the class). Class separation: for the same z, the feature "
    "variance across classes over the variance across z within a class (within-class spread: that "
    "variance, the classes' own diversity; a narrow generator scores high separation for that "
    "alone). Start FD ratio: FD-eval(modulated G, pretrained G) over FD-eval(pretrained G, "
    "itself) when transfer starts (1: self-initialization reproduces the pretrained generator).")


def esc(x) -> str:
    return html.escape(str(x))


def image(path: Path, caption: str = "", width: int | None = None) -> str:
    """An <img> with the PNG embedded as a data URI (empty if the file does not exist)."""
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}"{size}>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def sentences(lines: list[str]) -> str:
    """What a table shows, one generated sentence a bullet."""
    return ("<ul class='note'>" + "".join(f"<li>{esc(line)}</li>" for line in lines if line)
            + "</ul>")


def read_metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    return read_json(path) if path.exists() else {}


def condition_order(name: str):
    method, _, reg = name.partition(" / ")
    return (method == "floor", METHOD_ORDER.index(method) if method in METHOD_ORDER else 9,
            REG_ORDER.index(reg.split(" ")[0]) if reg.split(" ")[0] in REG_ORDER else 9, name)


def mean_and_spread(values: dict) -> tuple[float | None, float | None]:
    """The bar and its whisker: the grand mean and the larger of the two sds (between or within
    bases)."""
    vc = variance_components(values)
    if vc is None:
        return None, None
    return vc["mean"], max(v for v in (vc["between_sd"], vc["within_sd"], 0.0) if v is not None)


def drift_chart(values: dict) -> str:
    """Flip rate by group, one bar per condition with its spread, the floor as a dashed line."""
    conditions = [c for c in sorted(values, key=condition_order) if c != "floor"]
    series, errors = {}, {}
    for c in conditions:
        pairs = [mean_and_spread(values[c].get(m, {})) for _, m in GROUPS]
        series[c], errors[c] = [None if m is None else 100 * m for m, _ in pairs], \
            [None if e is None else 100 * e for _, e in pairs]
    floor = [None if m is None else 100 * m for m, _ in
             (mean_and_spread(values.get("floor", {}).get(m, {})) for _, m in GROUPS)]
    return bar_chart([g for g, _ in GROUPS], series,
                     "Flip rate by group (bar: mean; whisker: spread)", "%",
                     errors=errors, floor=floor, floor_label="floor: base vs base")


def fidelity_curves(values: dict, metric: str, title: str) -> str:
    """Per customization method, each regularizer's points (concept fidelity, accuracy change), one
    per weight, joined in order of fidelity: regularizers compared at the fidelity they reach."""
    charts = []
    for method in sorted({c.split(" / ")[0] for c in values if " / " in c}):
        series: dict[str, list[tuple]] = {}
        for c in values:
            if not c.startswith(f"{method} / "):
                continue
            reg = c.split(" / ", 1)[1]
            family, _, weight = reg.partition("-w")
            fx, sx = mean_and_spread(values[c].get("fidelity", {}))
            fy, sy = mean_and_spread(values[c].get(metric, {}))
            if fx is not None and fy is not None:
                series.setdefault(family, []).append(
                    (100 * fx, 100 * fy, 100 * sx, 100 * sy,
                     f"weight {weight}" if weight else "default weight"))
        if len(series) < 2:
            continue
        floor, _ = mean_and_spread(values.get("floor", {}).get(metric, {}))
        none, _ = mean_and_spread(values.get(f"{method} / none", {}).get("fidelity", {}))
        charts.append(curve_chart(
            series, f"{method}: {title}", "concept recognised (%)", "accuracy change (pts)",
            hline=None if floor is None else (100 * floor, "floor: base vs base"),
            vline=None if none is None else (100 * none, "fidelity without a regularizer"),
            x_range=(0.0, 100.0)))
    return "\n".join(charts)


def budget_caption(data: dict) -> str:
    """'Diffusion classifier: 40 timesteps x 9 prompts = 360 UNet passes an image, 180 test images,
    both wordings; its floor (the base model against itself, another noise bank): 2.1% of the
    held-out classes' images flip, 1.9% of the anchored ones'.'"""
    c, floor = data["paper1"].get("classifier") or {}, data["paper1"]["summary"].get("floor", {})
    if not c:
        return ""
    flips = {g: (floor.get(m) or {}).get("mean")
             for g, m in (("held-out", "heldout_flip"), ("anchored", "anchored_flip"))}
    text = (f"Diffusion classifier: {c['schedule']['n_timesteps']} timesteps, "
            f"{c['unet_passes_per_image']} UNet passes an image, {c['n_images']} test images under "
            f"both wordings")
    if all(v is not None for v in flips.values()):
        text += (f"; its floor (the base model against itself, another noise bank): "
                 f"{100 * flips['held-out']:.1f}% of the held-out classes' images flip, "
                 f"{100 * flips['anchored']:.1f}% of the anchored ones'")
    return text + "."


def paper1_section(run: Path, data: dict) -> str:
    values = data["paper1"]["values"]
    parts = ["<h2>1. Open-world forgetting in diffusion customization</h2>"]
    for base in sorted(p.name for p in (run / "diffusion-judge").glob("b*")
                       if (p / "metrics.json").exists()):
        parts.append(f"<p>Base model {esc(base)}: "
                     f"{esc(read_metrics(run / 'diffusion-judge' / base)['summary'])}.</p>")
    parts.append(image(run / "diffusion" / "b0" / "samples.png",
                       "base model b0: one row per base-class prompt", width=320))
    if not values:
        return "\n".join(parts + ["<p>No drift results yet: run <code>python train.py</code>.</p>"])
    unpacked = unpack(values)
    rules = [r for r in data["verdicts"] if r["paper"] == 1]
    parts.append(f"<p class='note'>{esc(budget_caption(data))}</p>")
    for title, columns in PAPER1_TABLES:
        parts += [f"<h3>{esc(title)}</h3>",
                  html_table(header(columns, "method / regularizer"),
                             rows(unpacked, columns, condition_order))]
    parts.append(sentences(
        verdict_sentences(rules) +
        [table_sentence(unpacked, "cdi_median", "held-out pairwise CDI", 1, 1, True)]))
    parts.append(f'<p class="note">{esc(DRIFT_NOTE)}</p>')
    parts.append(drift_chart(unpacked))
    curves = fidelity_curves(unpacked, "heldout_change", "held-out classes") + \
        fidelity_curves(unpacked, "anchored_change", "anchored classes")
    if curves:
        parts += ["<h3>Fidelity against drift</h3><p class='note'>Each point a regularizer at one "
                  "weight (mean over base models and seeds, whiskers: spread); the dashed line is "
                  "the floor, the dotted one the fidelity without a regularizer. A regularizer "
                  "protects what it does not name if its curve reaches the floor at that "
                  "fidelity.</p>", curves]
    parts.append("<h3>Before / after (same prompt, same seed; base model b0, seed 0)</h3>"
                 "<p class='note'>Each row is one base class under the anchored wording: on the "
                 "left of the white gap the base model, on the right the customized model, from "
                 "the same initial noise.</p>")
    for c in sorted(values, key=condition_order):
        name = f"b0-{c.replace(' / ', '-').split(' ')[0]}-s0"
        parts.append(image(run / "drift" / name / "pairs.png", f"{c}: base | customized",
                           width=420))
    parts.append("<h3>Concept samples (b0, seed 0)</h3>")
    for c in sorted(values, key=condition_order):
        name = f"b0-{c.replace(' / ', '-').split(' ')[0]}-s0"
        parts.append(image(run / "customize" / name / "samples.png", c, width=260))
    return "\n".join(parts)


def paper2_section(run: Path, data: dict) -> str:
    values = data["paper2"]["values"]
    parts = ["<h2>2. Hyper-modulated GAN transfer</h2>"]
    for base in sorted(p.name for p in (run / "gan-pretrain-judge").glob("b*")
                       if (p / "metrics.json").exists()):
        parts.append(f"<p>Pretrained GAN {esc(base)}: "
                     f"{esc(read_metrics(run / 'gan-pretrain-judge' / base)['summary'])}.</p>")
    if not values:
        return "\n".join(parts + [
            "<p>No transfer results yet: run <code>python train.py</code>.</p>"])
    unpacked = unpack(values)
    rules = [r for r in data["verdicts"] if r["paper"] == 2]
    for k in sorted({int(c.split("k=")[1]) for c in unpacked}):
        at_k = {c.split(" k=")[0]: v for c, v in unpacked.items() if c.endswith(f"k={k}")}
        parts += [f"<h3>k = {k} real images per target class</h3>",
                  html_table(header(PAPER2, "variant"), rows(at_k, PAPER2))]
        parts.append(sentences(
            verdict_sentences([r for r in rules if f"k={k}," in r["claim"]]) +
            [table_sentence(at_k, "kid", "per-class KID (x1000)", 1000, 2, True)]))
        kid = {c: mean_and_spread(v.get("kid", {})) for c, v in at_k.items()}
        parts.append(bar_chart(
            ["per-class KID"], {c: [None if m is None else 1000 * m] for c, (m, _) in kid.items()},
            f"Per-class KID x1000 at k = {k} (lower is better; whisker: spread)",
            errors={c: [None if e is None else 1000 * e] for c, (_, e) in kid.items()}, width=960))
    parts.append(f'<p class="note">{esc(GAN_NOTE)}</p>')
    parts.append(image(run / "gan-pretrain" / "b0" / "grid.png",
                       "pretrained unconditional generator b0", width=300))
    parts.append("<h3>Samples beside the k real training images (b0, seed 0)</h3>")
    for folder in sorted((run / "gan-transfer").glob("b0-*-s0")):  # each pair kept on one line
        parts.append('<div class="pair">'
                     + image(folder / "grid.png", f"{folder.name}: samples, one row per class",
                             width=260)
                     + image(folder / "real.png", "its real training images", width=260)
                     + "</div>")
    return "\n".join(parts)


def markdown_tables(run: Path) -> str:
    """The verdicts and results tables of a run folder as markdown (what the docs quote)."""
    data = results_json(run)
    if not data["paper1"]["values"] and not data["paper2"]["values"]:
        return f"no finished drift or GAN transfer runs in {run}" + (
            f"\n{left_out_line(data['left_out'])}" if data["left_out"] else "")
    text = f"## Verdicts ({data['world']})\n\n{verdict_markdown(data['verdicts'])}\n"
    for paper, tables in (("paper1", PAPER1_TABLES), ("paper2", (("GAN transfer", PAPER2),))):
        values = unpack(data[paper]["values"])
        for title, columns in tables if values else ():
            body = rows(values, columns, condition_order if paper == "paper1" else None)
            text += f"\n## {title}\n\n{markdown_table(header(columns, 'condition'), body)}\n"
            if title == "Semantic drift":
                text += f"\n{budget_caption(data)}\n"
    if data["left_out"]:
        text += f"\n{left_out_line(data['left_out'])}\n"
    return text


def headline(run: Path) -> str:
    """The verdict table, for the end of the pipeline."""
    data = results_json(run)
    note = left_out_line(data["left_out"])
    return verdict_markdown(data["verdicts"]) + (f"\n{note}" if note else "")


def write_report(run: Path, out: Path) -> Path:
    """runs/<preset>/ -> one HTML file, written atomically to `out` (the only file written)."""
    data = results_json(run)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")

    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>Report: {esc(run.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Report: preset {esc(run.name)}</h1>"
            f"<p class='note'>{stamp}, {esc(platform.node())}, "
            f"{esc(platform.processor() or platform.machine())}. "
            f"Every number comes from the JSON files under {esc(str(run))}. "
            f"{esc(left_out_line(data['left_out']))}</p>"
            f"<h2>Verdicts</h2><p class='note'>Each claim is decided by a rule fixed before the "
            f"runs (eval/verdicts.py): supported if the paired difference is beyond 2 standard "
            f"errors over base models in the claimed direction and holds on every base model; "
            f"refuted if the same holds the other way; otherwise unresolved.</p>"
            + html_table(VERDICT_HEADER, verdict_body(data["verdicts"]))
            + paper1_section(run, data) + paper2_section(run, data) + "</body></html>")
    atomic_write(out, lambda f: f.write(page.encode("utf-8", "replace")))
    return out
