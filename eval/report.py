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
from eval.drift import share_predicted_as
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

METHOD_ORDER, REG_ORDER = ("full", "full+prior", "lora", "custom", "ti"), ("none", "functional", "l2")
GROUP_NAMES = {"anchored": "anchored", "heldout_classes": "held-out classes", "heldout_templates": "held-out templates"}


def heldout_called_anchored(r: dict) -> float | None:
    """Share of the held-out classes' test images that the customized model's classifier assigns to an anchored
    class (eval.drift.share_predicted_as). Results from before 'base_classes' was stored: every class but the
    concept, where that matches the confusion matrix (None for a user's concept)."""
    confusion = r["semantic"]["heldout_classes"]["confusion_after"]
    classes = r.get("base_classes") or [c for c in r["class_names"] if c != r["concept_class"]]
    return share_predicted_as(confusion, classes, r["anchored_classes"]) if len(classes) == len(confusion) else None


# (header, value of one drift run, scale, digits): each cell is mean +- std over the repeats
SEMANTIC_COLUMNS = [("concept recognised (%)", lambda r: r["fidelity"]["recognised"], 100, 0),
                    ("concept, diff. classifier (%)", lambda r: r["fidelity"]["diffusion_classifier_concept_accuracy"],
                     100, 0)] + [
    (f"{label}: {what}", lambda r, g=g, k=k: r["semantic"][g][k], 100, 1)
    for g, label in GROUP_NAMES.items() for what, k in (("accuracy change (pts)", "mean_change"),
                                                        ("flip rate (%)", "flip_rate"))] + [
    ("held-out classes called anchored (%)", heldout_called_anchored, 100, 0)]
APPEARANCE_COLUMNS = [
    ("pairwise CDI, median", lambda r: r["appearance"]["heldout_classes"]["cdi_median"], 1, 1),
    ("set CDI", lambda r: r["appearance"]["heldout_classes"]["set_cdi"], 1, 2),
    ("set mean-colour delta-E", lambda r: r["appearance"]["heldout_classes"]["set_delta_e"], 1, 2),
    ("reassigned pairs (%)", lambda r: r["appearance"]["heldout_classes"].get("reassigned"), 100, 0),
    ("CDI share of reassigned pairs (%)", lambda r: r["appearance"]["heldout_classes"].get("cdi_share_reassigned"),
     100, 0),
    ("attribute compliance (%)", lambda r: r.get("attributes", {}).get("after", {}).get("all"), 100, 1),
    ("FD-eval per class", lambda r: r["appearance"]["heldout_classes"]["mean_fd_per_class"], 1, 2)]
FLOORS = {"semantic": lambda r: {**r, "semantic": r["semantic_floor"], "fidelity": {}},
          "appearance": lambda r: {**r, "appearance": r["appearance_floor"],
                                   "attributes": {"after": r.get("attributes", {}).get("floor", {})}}}
DRIFT_NOTE = ("Each cell: mean +- standard deviation over N repeats (customization seeds; each repeat uses its own "
              "noise and seed banks). Semantic: the diffusion classifier of the base and of the customized model on "
              "the same real test images; accuracy change and flip rate (share of images whose prediction changed) "
              "per group: anchored classes (which the functional regularizer's anchor prompts name), held-out classes "
              "(no anchor names them) and held-out templates (anchored classes in a wording no anchor uses); held-out "
              "classes called anchored: share of the held-out classes' images the customized model's classifier "
              "assigns to an anchored class. "
              "Appearance, held-out classes: paired generations (same prompt, same initial noise); pairwise CDI "
              "(Colour Drift Index: sum over CIELAB channels of the per-pair 1-D Wasserstein distance) is the median "
              "over pairs; set CDI and mean-colour delta-E compare the sets of a class's images as distributions; "
              "reassigned pairs: drawn with another shape or background colour; attribute compliance: held-out "
              "prompts that name colours and texture followed in all three. The floor rows measure the base model "
              "against itself with other noise (semantic) or other seeds (appearance).")


def condition(r: dict) -> str:
    """'lora / functional' (and the concept, when it is a user's folder rather than the held-out class)."""
    own = f" ({r['concept_class']})" if r["concept_class"].startswith("folder ") else ""
    return f"{r['method']} / {r['reg']}{own}"


def drift_results(run: Path) -> list[dict]:
    """Every finished drift measurement of the run, ordered by method and regularizer."""
    order = lambda r: (METHOD_ORDER.index(r["method"]), REG_ORDER.index(r["reg"]), r["seed"])  # noqa: E731
    return sorted(finished_runs(run / "drift"), key=order)


def _get(value, run):
    """value(run), or None where the run does not have that figure (e.g. attributes outside shapes)."""
    try:
        return value(run)
    except KeyError:
        return None


def drift_values(results: list[dict], columns, floor) -> dict[str, dict[str, list]]:
    """{condition (method / reg, then the floor): {column header: the per-repeat values}}."""
    conditions = by_condition(results, condition)
    conditions["floor: base vs base"] = list({r["seed"]: floor(r) for r in results}.values())  # one per repeat
    return {name: {header: [_get(value, r) for r in runs] for header, value, _, _ in columns}
            for name, runs in conditions.items()}


def drift_rows(results: list[dict], columns, floor) -> list[list]:
    """One row per method / regularizer, cells mean +- std over its repeats; then the floor row."""
    values = drift_values(results, columns, floor)
    return [[name, len(next(iter(cells.values())))]
            + [spread(cells[h], scale, digits) for h, _, scale, digits in columns]
            for name, cells in values.items()]


def drift_summary(run: Path) -> dict:
    """Every drift table cell's per-repeat values, for JSON: {table: {condition: {column: [values]}}}."""
    results = drift_results(run)
    return {"semantic": drift_values(results, SEMANTIC_COLUMNS, FLOORS["semantic"]),
            "appearance": drift_values(results, APPEARANCE_COLUMNS, FLOORS["appearance"])}


def drift_tables(results: list[dict]) -> list[tuple[str, list[str], list[list]]]:
    """The two drift tables: (title, header, rows)."""
    return [("Semantic drift", ["method / reg", "N"] + [c[0] for c in SEMANTIC_COLUMNS],
             drift_rows(results, SEMANTIC_COLUMNS, FLOORS["semantic"])),
            ("Appearance drift, held-out classes", ["method / reg", "N"] + [c[0] for c in APPEARANCE_COLUMNS],
             drift_rows(results, APPEARANCE_COLUMNS, FLOORS["appearance"]))]


def diffusion_section(run: Path) -> str:
    results = drift_results(run)
    base, clip = read_metrics(run / "diffusion"), read_metrics(run / "clip")
    parts = ["<h2>1. Open-world forgetting in diffusion customization</h2>"]
    if base:
        parts.append(f"<p>Base text-to-image DDPM: {base['unet_parameters']:,} UNet parameters; "
                     f"{esc(base['summary'])}. Tiny-CLIP zero-shot accuracy on base-class test images: "
                     f"{pct(clip.get('zero_shot_test', {}).get('accuracy'))}.</p>")
        parts.append(image(run / "diffusion" / "samples.png", "base model: one row per base-class prompt"))
    if not results:
        return "\n".join(parts + ["<p>No drift results yet: run <code>python evaluate.py drift</code>.</p>"])
    r0 = results[0]
    parts.append(f"<p>Concept: <b>{esc(r0['concept_class'])}</b>, learned from {esc(r0['k_images'])} images with the "
                 f"prompt '{esc(r0['prompt'])}'. Anchored classes: {esc(', '.join(r0['anchored_classes']))}; templates "
                 f"'{esc(r0['templates'][0])}' (anchored) and '{esc(r0['templates'][1])}' (held out). The diffusion "
                 f"classifier uses {r0['classifier']['unet_passes_per_image']} UNet passes per image on "
                 f"{r0['classifier']['n_images']} real test images.</p>")
    for title, header, rows in drift_tables(results):
        parts += [f"<h3>{esc(title)}</h3>", html_table(header, rows)]
    parts.append(f'<p class="note">{esc(DRIFT_NOTE)}</p>')
    conditions = by_condition(results, condition)
    parts.append(bar_chart(list(GROUP_NAMES.values()), {
        name: [100 * mean_std([r["semantic"][g]["flip_rate"] for r in runs])[0] for g in GROUP_NAMES]
        for name, runs in conditions.items()}, "Flip rate by group (mean over repeats)", "%"))
    classes = list(r0["semantic"]["heldout_classes"]["per_class"]) + list(r0["semantic"]["anchored"]["per_class"])
    parts.append(bar_chart(classes, {name: [100 * mean_std([
        r["semantic"][g]["per_class"][c]["change"] for r in runs for g in ("anchored", "heldout_classes")
        if c in r["semantic"][g]["per_class"]])[0] for c in classes] for name, runs in conditions.items()},
        "Per-class accuracy change (anchored template; held-out classes first)", "points"))
    first = [runs[0] for runs in conditions.values()]
    parts.append("<h3>Before / after (same prompt, same seed; first repeat)</h3><p class='note'>Each row a base "
                 "class under the anchored template; left half the base model, right half the customized model.</p>")
    parts += [image(run / "drift" / r["run"] / "pairs.png", name, width=400) for name, r in zip(conditions, first)]
    parts.append("<h3>Concept samples</h3>")
    parts += [image(run / "customize" / r["run"] / "samples.png", name, width=260)
              for name, r in zip(conditions, first)]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ paper 2

GAN_HEADER = ["run", "N", "trainable (% of G)", "acc. among targets", "accuracy", "FD-eval (intra)", "precision",
              "recall", "NN ratio", "class separation", "start FD ratio", "class spread", "seconds"]
GAN_NOTE = ("Mean +- sample std over N transfer seeds (one pretrained GAN). Accuracy: the evaluator's argmax over all "
            "classes equals the requested class (among targets: over the target classes only). Precision / recall "
            "(k = 3 nearest neighbours) of each class's samples against its test images, in evaluator features. NN "
            "ratio: median distance from a sample to the nearest of its class's k training images over the same "
            "for the class's real test images (1: as novel as new real data; towards 0: copies). Class separation: "
            "for the same z, the variance of the evaluator features over classes over their variance over z within "
            "a class (0: the class changes nothing; 1: a class change moves a sample as far as a new z). Start FD "
            "ratio (hyper-modulation only): FD-eval(modulated G, base G) / FD-eval(base G, base G) when transfer "
            "starts, after self-initialization where the run has it (1 = as close to the pretrained generator as a "
            "second sample set of it). Class spread: distance between class embeddings / their norm at the end (0 "
            "for copies, about 1.4 for independent random embeddings).")
GENERATOR_ORDER = ("scratch", "finetune", "hypermod")
CURVE_METRICS = (("accuracy among targets (%)", lambda q: 100 * q["accuracy_among_targets"]),
                 ("FD-eval (intra)", lambda q: q["fd_eval_intra"]), ("recall", lambda q: q["recall"]),
                 ("NN ratio", lambda q: q["nn_ratio"]))


def gan_results(run: Path) -> list[dict]:
    """Every finished transfer run, in the order of the ablation (scratch, finetune, hypermod variants), then
    by k and seed."""
    return sorted(finished_runs(run / "gan-transfer"),
                  key=lambda r: (GENERATOR_ORDER.index(r["generator"]), r["selfinit"], r["ssl"] != "none",
                                 r["head"] != "lowrank", r["k_per_target"], r["seed"]))


def ablation_k(results: list[dict]) -> int:
    """The k of the ablation table: the one with the most variants (then the most runs)."""
    ks = {r["k_per_target"] for r in results}
    count = lambda k: (len({r["run"] for r in results if r["k_per_target"] == k}),
                       sum(r["k_per_target"] == k for r in results))
    return max(sorted(ks), key=count)


def start_ratio(r: dict):
    """The start FD ratio of a hyper-modulation run (after self-init where it has one), else None."""
    check = r["start_check"] or {}
    return (check.get("after_selfinit") or check.get("random_heads") or {}).get("ratio")


def gan_rows(results: list[dict]) -> list[list[str]]:
    """One row per variant (at one k): mean +- std over its seeds."""
    rows = []
    for name, runs in by_condition(results, lambda r: r["run"]).items():
        q, r0 = [r["quality"] for r in runs], runs[0]
        rows.append([name, len(runs), f"{r0['trainable_parameters']:,} "
                     f"({100 * r0['trainable_parameters'] / r0['base_g_parameters']:.0f}%)",
                     spread([x["accuracy_among_targets"] for x in q], 100, unit="%"),
                     spread([x["accuracy"] for x in q], 100, unit="%"),
                     spread([x["fd_eval_intra"] for x in q], digits=2),
                     spread([x["precision"] for x in q], digits=2), spread([x["recall"] for x in q], digits=2),
                     spread([x["nn_ratio"] for x in q], digits=2),
                     spread([r["class_separation"]["features"] for r in runs], digits=2),
                     spread([start_ratio(r) for r in runs], digits=2),
                     spread([r["class_spread"] for r in runs], digits=2),
                     spread([r["train_seconds"] for r in runs], digits=0)])
    return rows


def gan_curve(results: list[dict]) -> tuple[list[str], list[list[str]], dict]:
    """The data-efficiency curve: header, rows (variant, metric, mean +- std at each k) and, per metric, the
    means as bar-chart series {variant: [value at each k]}."""
    ks = sorted({r["k_per_target"] for r in results})
    variants = by_condition(results, lambda r: r["run"])
    rows, charts = [], {title: {} for title, _ in CURVE_METRICS}
    for name, runs in variants.items():
        for title, value in CURVE_METRICS:
            at = [[value(r["quality"]) for r in runs if r["k_per_target"] == k] for k in ks]
            rows.append([name, title] + [spread(v, digits=2) for v in at])
            charts[title][name] = [mean_std(v)[0] if v else None for v in at]
    return ["variant", "metric"] + [f"k = {k}" for k in ks], rows, charts


def gan_intro(run: Path, results: list[dict]) -> str:
    pretrain = read_metrics(run / "gan-pretrain")
    if not results:
        return "No transfer runs yet: run `python train.py gan-transfer`."
    r0 = results[0]
    text = (f"A GAN pretrained unconditionally on {', '.join(pretrain.get('source_classes', ['?']))} becomes a "
            f"conditional GAN of {', '.join(r0['target_classes'])} from k = {ablation_k(results)} real images per "
            f"class; quality against the test split of the target classes; every run trains all of D "
            f"({r0['d_parameters']:,} parameters).")
    if pretrain:
        text += f" Pretraining: {pretrain['summary']}."
    return text


def gan_section(run: Path) -> str:
    results = gan_results(run)
    parts = ["<h2>2. Hyper-modulated GAN transfer</h2>", f"<p>{esc(gan_intro(run, results))}</p>"]
    ablation = [r for r in results if results and r["k_per_target"] == ablation_k(results)]
    if ablation:
        parts += [html_table(GAN_HEADER, gan_rows(ablation)), f'<p class="note">{esc(GAN_NOTE)}</p>']
    if len({r["k_per_target"] for r in results}) > 1:
        header, rows, charts = gan_curve(results)
        parts += ["<h3>Data efficiency: k images per target class</h3>", html_table(header, rows)]
        parts += [bar_chart(header[2:], series, title, width=540) for title, series in charts.items()]
    parts.append(image(run / "gan-pretrain" / "grid.png", "pretrained unconditional generator", width=320))
    parts += [image(run / "gan-transfer" / f"{r['run']}-k{r['k_per_target']}-s{r['seed']}" / "grid.png",
                    f"{r['run']}: one row per target class", width=320)
              for r in ablation if r["seed"] == 0]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ outputs

def markdown_tables(run: Path) -> str:
    """The results tables of a run folder as markdown (what the README quotes)."""
    text, drift = "", drift_results(run)
    if drift:
        text += "## Open-world forgetting\n"
        for title, header, rows in drift_tables(drift):
            text += f"\n### {title}\n\n{markdown_table(header, rows)}\n"
        text += f"\n{DRIFT_NOTE}\n\n"
    gan = gan_results(run)
    if gan:
        ablation = [r for r in gan if r["k_per_target"] == ablation_k(gan)]
        text += (f"## GAN transfer\n\n{gan_intro(run, gan)}\n\n{markdown_table(GAN_HEADER, gan_rows(ablation))}"
                 f"\n\n{GAN_NOTE}")
    if len({r["k_per_target"] for r in gan}) > 1:
        header, rows, _ = gan_curve(gan)
        text += f"\n\n## GAN data efficiency\n\n{markdown_table(header, rows)}"
    return text or f"no finished drift or GAN transfer runs in {run}"


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
