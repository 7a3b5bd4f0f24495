"""The finished runs of a preset's output folder, as values per condition and per (base model,
seed): what the tables, the report and the verdicts are made of. Nothing here knows about models;
everything is read from the metrics.json files the stages wrote.

Only current runs count. A run records the fingerprint of every model file it was built on (its run
key's `inputs.*`) and where that file lies (`paths.*`). A run whose base model, customization, floor
measurement, pretrained GAN or evaluator has been retrained since is left out, and named in one
line: averaging it with runs of the new model would mix two experiments. Runs of one condition that
differ in settings (a changed weight, say) are never averaged either: each setting is its own row,
named by what differs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.checkpoint import fingerprint
from core.files import read_json
from core.presets import LR_SWEEP_GAN_SEEDS
from eval.drift import share_predicted_as
from eval.stats import variance_components
from eval.verdicts import paper1_claims, paper2_claims, verdicts

SEED_FIELDS = ("customize.seed", "diffusion.seed", "transfer.seed", "gan.seed")
INPUT_NAMES = {"base": "base model", "custom": "customization", "floor": "floor measurement",
               "evaluator": "evaluator", "pretrained": "pretrained GAN", "clip": "CLIP"}


def stale_input(result: dict, out_dir: Path, seen: dict) -> str | None:
    """The first input of a run that is no longer the file it was built on ('base model', ...), else
    None."""
    key = result.get("run_key") or {}
    for name, rel in ((k[len("paths."):], v) for k, v in key.items() if k.startswith("paths.")):
        path = out_dir / rel
        if path not in seen:
            seen[path] = fingerprint(path) if path.exists() else None
        if seen[path] != key.get(f"inputs.{name}"):
            return INPUT_NAMES.get(name, name)
    return None


def current_runs(folder: Path, out_dir: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """(the finished runs in folder's subfolders whose inputs are current, [(name, stale
    input)])."""
    runs, left_out, seen = [], [], {}
    for path in sorted(folder.glob("*/metrics.json")):
        r = read_json(path)
        if not isinstance(r, dict) or "run_key" not in r:
            left_out.append((path.parent.name, "its metrics.json is not a run's results"))
            continue
        stale = stale_input(r, out_dir, seen)
        if stale:
            left_out.append((path.parent.name, f"its {stale} has been retrained since"))
        else:
            runs.append(r)
    return runs, left_out


def settings_digest(result: dict) -> str:
    """What a run's settings are, apart from its seeds and inputs."""
    key = {k: v for k, v in result["run_key"].items()
           if k not in SEED_FIELDS and not k.startswith(("inputs.", "paths."))}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def split_by_settings(runs: list[dict], condition) -> dict[str, list[dict]]:
    """Runs grouped by condition(run), a condition whose runs differ in settings split into one row
    per setting, named by the fields that differ from its most common setting."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in runs:
        groups.setdefault(condition(r), {}).setdefault(settings_digest(r), []).append(r)
    out = {}
    for name, by_digest in groups.items():
        common = max(by_digest.values(), key=len)[0]["run_key"]
        for rs in by_digest.values():
            key = rs[0]["run_key"]
            diff = [f"{k}={key.get(k)}" for k in sorted(set(key) | set(common))
                    if key.get(k) != common.get(k)
                    and k not in SEED_FIELDS and not k.startswith(("inputs.", "paths."))]
            out[name + (f" [{', '.join(diff)}]" if diff else "")] = rs
    return out


# ------------------------------------------------------------------------------------------ paper 1

def heldout_called_anchored(r: dict, floor: bool = False) -> float | None:
    """Share of the held-out classes' test images that the classifier assigns to an anchored
    class."""
    group = r["semantic_floor" if floor else "semantic"]["heldout_classes"]
    return share_predicted_as(group["confusion_after"], r["base_classes"], r["anchored_classes"])


def drift_metrics(r: dict, floor: bool = False) -> dict:
    """Every per-run figure of a drift result (the floor's: the base model against itself on that
    bank)."""
    s, a = (r["semantic_floor" if floor else "semantic"],
            r["appearance_floor" if floor else "appearance"])
    held, attrs = (a["heldout_classes"],
                   r.get("attributes", {}).get("floor" if floor else "after", {}))
    out = {"anchored_change": s["anchored"]["mean_change"],
           "anchored_flip": s["anchored"]["flip_rate"],
           "heldout_change": s["heldout_classes"]["mean_change"],
           "heldout_flip": s["heldout_classes"]["flip_rate"],
           "template_change": s["heldout_templates"]["mean_change"],
           "template_flip": s["heldout_templates"]["flip_rate"],
           "heldout_called_anchored": heldout_called_anchored(r, floor),
           "cdi_median": held["cdi_median"], "set_cdi": held["set_cdi"],
           "set_delta_e": held["set_delta_e"], "reassigned": held.get("reassigned"),
           "cdi_share_reassigned": held.get("cdi_share_reassigned"),
           "attribute_compliance": attrs.get("all"), "fd_per_class": held["mean_fd_per_class"]}
    margin, prompt = (r.get("margin_floor" if floor else "margin"),
                      r.get("prompt_error_floor" if floor else "prompt_error"))
    if margin:
        out.update(heldout_margin=margin["heldout_classes"]["mean"],
                   anchored_margin=margin["anchored"]["mean"])
    if prompt:
        words = prompt["anchored_wording"]
        out.update(shared_shift=words["shared"], anchored_specific=words["anchored_specific"],
                   heldout_specific=words["heldout_specific"])
    leakage = r.get("leakage") or {}
    out["leakage"] = leakage.get("before" if floor else "after")
    if not floor:
        out.update(fidelity=r["fidelity"]["recognised"],
                   fidelity_g1=r["fidelity"].get("recognised_guidance_1"),
                   fidelity_classifier=r["fidelity"]["diffusion_classifier_concept_accuracy"])
    return out


def paper1_values(run: Path) -> tuple[dict, list, dict]:
    """({condition: {metric: {(base, seed): value}}} with the floor as condition 'floor', left-out
    runs, the diffusion classifier's schedule as the drift runs record it)."""
    runs, left_out = current_runs(run / "drift", run.parent)

    def condition(r):
        own = f" ({r['concept_class']})" if r["concept_class"].startswith("folder ") else ""
        return f"{r['method']} / {r.get('regularizer', r['reg'])}{own}"
    values = {}
    for name, rs in split_by_settings(runs, condition).items():
        values[name] = collect(rs, drift_metrics)
    # one per base and bank: every method has it
    floors = {(r["base"], r["seed"]): r for r in runs}.values()
    if floors:
        values["floor"] = collect(list(floors), lambda r: drift_metrics(r, floor=True))
    return values, left_out, runs[0].get("classifier", {}) if runs else {}


def collect(runs: list[dict], metrics) -> dict:
    """{metric: {(base, seed): value}} of runs (a run's base is its 'base', e.g. 'b0')."""
    out: dict[str, dict] = {}
    for r in runs:
        for k, v in metrics(r).items():
            out.setdefault(k, {})[(r["base"], r["seed"])] = v
    return out


# ------------------------------------------------------------------------------------------ paper 2

def start_ratio(r: dict):
    """The start FD ratio of a hyper-modulation run (after self-init where it has one), else
    None."""
    check = r["start_check"] or {}
    return (check.get("after_selfinit") or check.get("random_heads") or {}).get("ratio")


def transfer_metrics(r: dict) -> dict:
    q, sep = r["quality"], r["class_separation"]
    return {"kid": q["kid"], "fd_eval": q["fd_eval"], "fd_eval_floor": q["fd_eval_floor"],
            "fd_eval_validation": q["fd_eval_validation"], "precision": q["precision"],
            "recall": q["recall"], "density": q["density"], "coverage": q["coverage"],
            "accuracy": q["accuracy"], "acc_targets": q["accuracy_among_targets"],
            "real_acc_targets": q["real_accuracy_among_targets"],
            "nn_ratio": q["nn_ratio"], "separation": sep["features"],
            "within": sep.get("features_within"),
            "start_ratio": start_ratio(r), "class_spread": r["class_spread"],
            "trainable": r["trainable_parameters"] / r["base_g_parameters"],
            "seconds": r["train_seconds"]}


def paper2_values(run: Path) -> tuple[dict, list]:
    """({'<variant> k=<k>': {metric: {(base, seed): value}}}, left-out runs). Runs on the GANs
    that chose the learning rates are left out: they are the sweep's validation data."""
    runs, left_out = current_runs(run / "gan-transfer", run.parent)
    sweep = {f"b{seed}" for seed in LR_SWEEP_GAN_SEEDS}
    left_out += [(r["name"], "on a pretrained GAN that chose the learning rates, "
                             "bench/gan_lr_sweep.py") for r in runs if r["base"] in sweep]
    runs = [r for r in runs if r["base"] not in sweep]
    grouped = split_by_settings(runs, lambda r: f"{r['variant']} k={r['k_per_target']}")
    return {name: collect(rs, transfer_metrics) for name, rs in grouped.items()}, left_out


# --------------------------------------------------------------------------------------- everything

def world(run: Path) -> str:
    """'shapes (quick)' or 'photos (cifar10-cpu)': the data a preset's results are about."""
    return f"{'photos' if run.name.startswith('cifar10') else 'shapes'} ({run.name})"


def results_json(run: Path) -> dict:
    """Every per-run value, each condition's variance components, the verdicts and the runs left
    out."""
    p1, left1, classifier = paper1_values(run)
    p2, left2 = paper2_values(run)
    methods = sorted({c.split(" / ")[0] for c in p1 if " / " in c})
    ks = sorted({int(c.split("k=")[1]) for c in p2 if "k=" in c})
    fidelity = {c: mean(m.get("fidelity", {})) for c, m in p1.items()}
    rows = verdicts(world(run), p1, paper1_claims(methods), fidelity) + \
        verdicts(world(run), p2, paper2_claims(ks, ("lowrank", "dense")))

    def summarize(values):
        return {c: {m: variance_components(v) for m, v in ms.items()} for c, ms in values.items()}

    def per_run(values):
        return {c: {m: {f"{b}/s{s}": x for (b, s), x in v.items()} for m, v in ms.items()}
                for c, ms in values.items()}
    return {"world": world(run), "paper1": {"values": per_run(p1), "summary": summarize(p1),
                                            "classifier": classifier},
            "paper2": {"values": per_run(p2), "summary": summarize(p2)}, "verdicts": rows,
            "left_out": [{"run": n, "stale": why} for n, why in left1 + left2]}


def mean(values: dict) -> float | None:
    xs = [v for v in values.values() if v is not None]
    return sum(xs) / len(xs) if xs else None


def left_out_line(left_out: list[dict]) -> str:
    """'3 runs left out (its base model has been retrained since): b0-full-none-s1, ...' ('' if
    none)."""
    reasons: dict[str, list[str]] = {}
    for entry in left_out:
        reasons.setdefault(entry["stale"], []).append(entry["run"])
    return "; ".join(f"{len(names)} run{'s' * (len(names) > 1)} left out ({why}): "
                     f"{', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
                     for why, names in reasons.items())
