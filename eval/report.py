"""One self-contained HTML page with the results of a preset's run: tables, SVG charts, embedded PNGs.

It reads what the stages wrote under runs/<preset>/ (JSON and PNG files) and needs nothing at view time:
charts are inline SVG, images are base64 data URIs, the CSS is inline, so it opens without a network.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import platform
from pathlib import Path

from eval.svg import bar_chart

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:13px}
figure{display:inline-block;margin:0.5em 1em 0.5em 0;vertical-align:top}figcaption{font-size:12px;color:#444}
img{image-rendering:pixelated}"""


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


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def num(x, digits: int = 2) -> str:
    """x rounded to `digits`; a value that rounds to zero prints without a sign (no "-0.0")."""
    return "-" if x is None else f"{round(x, digits) + 0.0:.{digits}f}"   # -0.0 + 0.0 == +0.0


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------------ diffusion

DRIFT_HEADER = ["method / reg", "trainable", "concept recognised", "concept (diff. classifier)", "base accuracy",
                "mean change (pts)", "worst change (pts)", "flip rate", "CDI", "delta-E", "PSNR (dB)",
                "texture (Gram)", "FD-eval per class"]


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def drift_results(run: Path) -> list[dict]:
    """Every runs/<preset>/drift/<method>-<reg>.json, by method, each without the regularizer first."""
    results = [json.loads(p.read_text()) for p in (run / "drift").glob("*.json")]
    return sorted(results, key=lambda r: (r["method"], r["reg"] != "none", r["reg"]))


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
    base = read_json(run / "diffusion" / "metrics.json") or {}
    clip = read_json(run / "clip" / "metrics.json") or {}
    parts = ["<h2>1. Open-world forgetting in diffusion customization</h2>"]
    if base:
        samples = base.get("samples", {})
        parts.append(f"<p>Base text-to-image DDPM: {base['unet_parameters']:,} UNet parameters, {base['steps']} steps "
                     f"in {base['train_seconds']:.0f} s on {esc(base['device'])}; {esc(samples.get('summary', ''))}. "
                     f"Tiny-CLIP zero-shot accuracy on base-class test images: "
                     f"{pct(clip.get('zero_shot_test', {}).get('accuracy'))}.</p>")
        parts.append(image(run / "diffusion" / "samples.png", "base model: one row per base-class prompt"))
    if not results:
        return "\n".join(parts + ["<p>No drift results yet: run <code>python evaluate.py drift</code>.</p>"])
    r0 = results[0]
    parts.append(f"<p>Concept: <b>{esc(r0['concept_class'])}</b>, learned from "
                 f"{esc(r0.get('k_images', 5))} images with the prompt '{esc(r0.get('prompt', ''))}'. "
                 f"Semantic drift: the diffusion classifier "
                 f"({r0['classifier']['unet_passes_per_image']} UNet passes per image) on "
                 f"{r0['classifier']['n_images']} real test images of the base classes; tiny-CLIP zero-shot on the "
                 f"same images: {pct(r0['clip_zero_shot_accuracy'])}. Appearance drift: "
                 f"{r0['appearance']['n_pairs']} paired DDIM (eta = 0) generations, same prompt and seed.</p>")
    parts.append(table(DRIFT_HEADER, drift_rows(results)))
    parts.append('<p class="note">Concept recognised: share of samples for the concept prompt that the evaluator '
                 "labels as the concept class. CDI: Colour Drift Index (sum over CIELAB channels of the per-pair "
                 "1-D Wasserstein distance), lower is less drift; PSNR: higher is less drift. The last row is "
                 "what the metrics read for noise alone (semantic: the base model classified twice with "
                 "different noise) and for unrelated images (appearance: base images of different seeds).</p>")
    names = [f"{r['method']}/{r['reg']}" for r in results]
    classes = list(r0["semantic"]["per_class"])
    parts.append(bar_chart(classes, {n: [100 * r["semantic"]["per_class"][c]["change"] for c in classes]
                                     for n, r in zip(names, results)},
                           "Per-class accuracy change after customization", "points"))
    methods = sorted({r["method"] for r in results}, key=[r["method"] for r in results].index)
    by = {(r["method"], r["reg"]): r for r in results}
    for key, label, scale in (("cdi", "Colour Drift Index per method", 1), ("flip_rate", "Flip rate (%)", 100)):
        series = {}
        for reg in ("none", "functional"):
            series[f"reg = {reg}"] = [scale * (by[(m, reg)]["appearance"]["cdi"] if key == "cdi" else
                                               by[(m, reg)]["semantic"]["flip_rate"]) if (m, reg) in by else None
                                      for m in methods]
        parts.append(bar_chart(methods, series, label, "", width=540))
    parts.append("<h3>Before / after (same prompt, same seed)</h3><p class='note'>Each row a base-class prompt; "
                 "left half the base model, right half the customized model.</p>")
    parts += [image(run / "drift" / f"{r['method']}-{r['reg']}.png", n, width=400) for n, r in zip(names, results)]
    parts.append("<h3>Concept samples</h3>")
    parts += [image(run / "customize" / f"{r['method']}-{r['reg']}" / "samples.png", n, width=260)
              for n, r in zip(names, results)]
    return "\n".join(parts)


def results_section(title: str, intro: str, header: list[str], rows: list[list], note: str = "",
                    images: list[tuple[Path, str]] = ()) -> str:
    """A titled table of results with a note and embedded images (e.g. the GAN ablation)."""
    parts = [f"<h2>{esc(title)}</h2>", f"<p>{esc(intro)}</p>"]
    parts.append(table(header, rows) if rows else "<p>No results yet.</p>")
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    parts += [image(path, caption, width=320) for path, caption in images]
    return "\n".join(parts)


def write_report(run: Path, out: Path, sections: list[str]) -> Path:
    """runs/<preset>/ -> one HTML file with the given sections."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report: {esc(run.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>Report: preset {esc(run.name)}</h1>"
            f"<p class='note'>{stamp}, {esc(platform.node())}, {esc(platform.processor() or platform.machine())}. "
            f"Every number comes from the JSON files under {esc(str(run))}.</p>" + "\n".join(sections) +
            "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
