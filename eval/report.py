"""The results of a preset's run as tables (markdown for the README, HTML) and one self-contained HTML page.

Everything is read from what the stages wrote under runs/<preset>/ (metrics.json files and PNGs); nothing
here knows about models. The page needs nothing at view time: charts are inline SVG (eval/svg.py), images
are base64 data URIs, the CSS is inline, so it opens without a network.
"""
from __future__ import annotations

import base64
import datetime
import html
import math
import platform
from pathlib import Path

from core.files import atomic_write, read_json
from eval.svg import bar_chart

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:13px}
figure{display:inline-block;margin:0.5em 1em 0.5em 0;vertical-align:top}figcaption{font-size:12px;color:#444}
img{image-rendering:pixelated}"""


# ------------------------------------------------------------------------------------------ formatting

def esc(x) -> str:
    return html.escape(str(x))


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def num(x, digits: int = 2) -> str:
    """x rounded to `digits`; a value that rounds to zero prints without a sign (no "-0.0")."""
    return "-" if x is None else f"{round(x, digits) + 0.0:.{digits}f}"   # -0.0 + 0.0 == +0.0


def mean_std(values) -> tuple[float, float] | None:
    """Mean and sample standard deviation (n - 1) of the finite values; std 0 for one value; None for none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def spread(values, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """'12.3 +- 1.4' over the repeats (mean +- sample std), '12.3' for a single run, '-' for none."""
    stats = mean_std(values)
    if stats is None:
        return "-"
    mean, std = stats
    values = [v for v in values if v is not None]
    text = f"{round(scale * mean, digits) + 0.0:.{digits}f}{unit}"
    return text if len(values) < 2 else f"{text} +- {round(scale * std, digits) + 0.0:.{digits}f}"


def by_condition(results: list[dict], name) -> dict[str, list[dict]]:
    """Runs grouped by name(run) (everything but the repeat seed), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(name(r), []).append(r)
    return groups


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path, caption: str = "", width: int | None = None) -> str:
    """An <img> with the PNG embedded as a data URI (empty if the file does not exist)."""
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}"{size}>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def finished_runs(folder: Path) -> list[dict]:
    """The metrics.json of every finished run in the subfolders of `folder`."""
    return [read_json(p) for p in sorted(folder.glob("*/metrics.json"))]


def read_metrics(folder: Path) -> dict:
    """folder/metrics.json, or {} when that stage has not finished."""
    path = folder / "metrics.json"
    return read_json(path) if path.exists() else {}


# ------------------------------------------------------------------------------------------ paper 1

DRIFT_HEADER = ["method / reg", "trainable", "concept recognised", "concept (diff. classifier)", "base accuracy",
                "mean change (pts)", "worst change (pts)", "flip rate", "CDI", "delta-E", "PSNR (dB)",
                "texture (Gram)", "FD-eval per class"]
DRIFT_NOTE = ("Concept recognised: share of samples for the concept prompt that the evaluator labels as the concept "
              "class. CDI: Colour Drift Index (sum over CIELAB channels of the per-pair 1-D Wasserstein distance), "
              "lower is less drift; PSNR: higher is less drift. The last row is what the metrics read for noise "
              "alone (semantic: the base model classified twice with different noise) and for unrelated images "
              "(appearance: base images of different seeds).")


def drift_results(run: Path) -> list[dict]:
    """Every finished drift measurement of the run, by method, each without the regularizer first."""
    return sorted(finished_runs(run / "drift"), key=lambda r: (r["method"], r["reg"] != "none", r["reg"]))


def drift_rows(results: list[dict]) -> list[list]:
    rows = []
    for r in results:
        s, a, f = r["semantic"], r["appearance"], r["fidelity"]
        rows.append([f"{r['method']} / {r['reg']}", f"{r['customization']['trainable_parameters']:,}",
                     pct(f["recognised"]), pct(f["diffusion_classifier_concept_accuracy"]),
                     f"{pct(s['accuracy_before'])} -> {pct(s['accuracy_after'])}", num(100 * s["mean_change"], 1),
                     f"{num(100 * s['worst_change'], 1)} ({s['worst_class']})", pct(s["flip_rate"]),
                     num(a["cdi"]), num(a["delta_e"]), num(a["psnr"], 1), num(a["texture_gram"], 3),
                     num(a["mean_fd_per_class"], 3)])
    if results:  # the controls: classifier noise, and images that share nothing but the prompt
        s, a = results[0]["semantic_floor"], results[0]["appearance_unrelated"]
        rows.append(["noise floor / unrelated pairs", "", "", "", "base vs base (other noise)",
                     num(100 * s["mean_change"], 1), f"{num(100 * s['worst_change'], 1)} ({s['worst_class']})",
                     pct(s["flip_rate"]), num(a["cdi"]), num(a["delta_e"]), num(a["psnr"], 1),
                     num(a["texture_gram"], 3), num(a["mean_fd_per_class"], 3)])
    return rows


def diffusion_section(run: Path) -> str:
    results = drift_results(run)
    base, clip = read_metrics(run / "diffusion"), read_metrics(run / "clip")
    parts = ["<h2>1. Open-world forgetting in diffusion customization</h2>"]
    if base:
        parts.append(f"<p>Base text-to-image DDPM: {base['unet_parameters']:,} UNet parameters; {esc(base['summary'])}. "
                     f"Tiny-CLIP zero-shot accuracy on base-class test images: "
                     f"{pct(clip.get('zero_shot_test', {}).get('accuracy'))}.</p>")
        parts.append(image(run / "diffusion" / "samples.png", "base model: one row per base-class prompt"))
    if not results:
        return "\n".join(parts + ["<p>No drift results yet: run <code>python evaluate.py drift</code>.</p>"])
    r0 = results[0]
    parts.append(f"<p>Concept: <b>{esc(r0['concept_class'])}</b>, learned from "
                 f"{esc(r0['k_images'])} images with the prompt '{esc(r0['prompt'])}'. "
                 f"Semantic drift: the diffusion classifier "
                 f"({r0['classifier']['unet_passes_per_image']} UNet passes per image) on "
                 f"{r0['classifier']['n_images']} real test images of the base classes; tiny-CLIP zero-shot on the "
                 f"same images: {pct(r0['clip_zero_shot_accuracy'])}. Appearance drift: "
                 f"{r0['appearance']['n_pairs']} paired DDIM (eta = 0) generations, same prompt and seed.</p>")
    parts += [html_table(DRIFT_HEADER, drift_rows(results)), f'<p class="note">{esc(DRIFT_NOTE)}</p>']
    names = [f"{r['method']}/{r['reg']}" for r in results]
    classes = list(r0["semantic"]["per_class"])
    parts.append(bar_chart(classes, {n: [100 * r["semantic"]["per_class"][c]["change"] for c in classes]
                                     for n, r in zip(names, results)},
                           "Per-class accuracy change after customization", "points"))
    methods = sorted({r["method"] for r in results}, key=[r["method"] for r in results].index)
    by = {(r["method"], r["reg"]): r for r in results}
    for label, value in (("Colour Drift Index per method", lambda r: r["appearance"]["cdi"]),
                         ("Flip rate (%)", lambda r: 100 * r["semantic"]["flip_rate"])):
        series = {f"reg = {reg}": [value(by[(m, reg)]) if (m, reg) in by else None for m in methods]
                  for reg in ("none", "functional")}
        parts.append(bar_chart(methods, series, label, "", width=540))
    parts.append("<h3>Before / after (same prompt, same seed)</h3><p class='note'>Each row a base-class prompt; "
                 "left half the base model, right half the customized model.</p>")
    parts += [image(run / "drift" / f"{r['method']}-{r['reg']}-s{r['seed']}" / "pairs.png", n, width=400)
              for n, r in zip(names, results)]
    parts.append("<h3>Concept samples</h3>")
    parts += [image(run / "customize" / f"{r['method']}-{r['reg']}-s{r['seed']}" / "samples.png", n, width=260)
              for n, r in zip(names, results)]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ paper 2

GAN_HEADER = ["run", "trainable params", "% of base G", "accuracy", "acc. among targets",
              "FD-eval (intra)", "FD-eval (all)", "KID (intra)", "start FD ratio", "class spread", "seconds"]
GAN_NOTE = ("Accuracy: the evaluator's argmax over all classes equals the requested class (among targets: argmax "
            "over the target classes only). Start FD ratio (hyper-modulation only): FD-eval(modulated G, base G) / "
            "FD-eval(base G, base G) when transfer starts, i.e. after self-initialization where the run has it "
            "(1 = as close to the pretrained generator as a second sample set of it). Class spread (hyper-modulation "
            "only): mean distance between two classes' embeddings / mean embedding norm at the end (0: every class "
            "the same, as self-initialization leaves them; about 1.4 for independent random embeddings).")
GENERATOR_ORDER = ("scratch", "finetune", "hypermod")


def gan_results(run: Path) -> list[dict]:
    """Every finished transfer run, in the order of the ablation (scratch, finetune, hypermod variants)."""
    return sorted(finished_runs(run / "gan-transfer"),
                  key=lambda r: (GENERATOR_ORDER.index(r["generator"]), r["selfinit"], r["ssl"] != "none",
                                 r["head"] != "lowrank"))


def gan_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        q = r["quality"]
        start = r["start_check"] or {}
        start = start.get("after_selfinit") or start.get("random_heads") or {}
        rows.append([r["run"], f"{r['trainable_parameters']:,}",
                     f"{100 * r['trainable_parameters'] / r['base_g_parameters']:.0f}%", pct(q["accuracy"]),
                     pct(q["accuracy_among_targets"]), num(q["fd_eval_intra"]), num(q["overall"]["fd_eval"]),
                     num(q["kid_intra"], 4), num(start.get("ratio")), num(r["class_spread"]),
                     f"{r['train_seconds']:.0f}"])
    return rows


def gan_intro(run: Path, results: list[dict]) -> str:
    pretrain = read_metrics(run / "gan-pretrain")
    if not results:
        return "No transfer runs yet: run `python train.py gan-transfer`."
    r0 = results[0]
    text = (f"A GAN pretrained unconditionally on {', '.join(pretrain.get('source_classes', ['?']))} becomes a "
            f"conditional GAN of {', '.join(r0['target_classes'])} from k = {r0['k_per_target']} real images per "
            f"class; quality against the test split of the target classes; every run trains all of D "
            f"({r0['d_parameters']:,} parameters).")
    if pretrain:
        text += f" Pretraining: {pretrain['summary']}."
    return text


def gan_section(run: Path) -> str:
    results = gan_results(run)
    parts = ["<h2>2. Hyper-modulated GAN transfer</h2>", f"<p>{esc(gan_intro(run, results))}</p>"]
    if results:
        parts += [html_table(GAN_HEADER, gan_rows(results)), f'<p class="note">{esc(GAN_NOTE)}</p>']
    parts.append(image(run / "gan-pretrain" / "grid.png", "pretrained unconditional generator", width=320))
    parts += [image(run / "gan-transfer" / f"{r['run']}-s{r['seed']}" / "grid.png",
                    f"{r['run']}: one row per target class", width=320)
              for r in results]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ outputs

def markdown_tables(run: Path) -> str:
    """The results tables of a run folder as markdown (what the README quotes)."""
    text = "## Open-world forgetting\n\n" + markdown_table(DRIFT_HEADER, drift_rows(drift_results(run)))
    gan = gan_results(run)
    if gan:
        text += (f"\n\n## GAN transfer\n\n{gan_intro(run, gan)}\n\n{markdown_table(GAN_HEADER, gan_rows(gan))}"
                 f"\n\n{GAN_NOTE}")
    return text


def write_report(run: Path, out: Path) -> Path:
    """runs/<preset>/ -> one HTML file, written atomically to `out` (the only file written)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report: {esc(run.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Report: preset {esc(run.name)}</h1>"
            f"<p class='note'>{stamp}, {esc(platform.node())}, {esc(platform.processor() or platform.machine())}. "
            f"Every number comes from the JSON files under {esc(str(run))}.</p>"
            + diffusion_section(run) + gan_section(run) + "</body></html>")
    atomic_write(out, lambda f: f.write(page.encode()))
    return out
