"""Customization methods: which parameters each one trains, and their checkpoints.

    full        DreamBooth (Ruiz et al. 2023): every UNet weight.
    full+prior  DreamBooth with prior preservation (Sec. 3.3, Eq. 2): every UNet weight (the loss differs).
    lora        LoRA (Hu et al. 2021): rank-r adapters on the attention projections (optionally the
                residual-block convolutions); the base weights stay frozen.
    custom      Custom Diffusion (Kumari et al. 2023, Sec. 3.1): only the cross-attention key/value
                projections W_k, W_v, plus the placeholder token's embedding.
    ti          Textual inversion (Gal et al. 2023, Sec. 3): only the placeholder token's embedding.

The placeholder (e.g. <new0>) is a reserved token that pretraining never saw. DreamBooth and LoRA use it
as a rare identifier with its fixed embedding; textual inversion and Custom Diffusion learn its embedding,
initialised at the mean embedding of the base class names.

A customized checkpoint stores only the trainable parameters (the whole UNet for full finetuning, the
adapters for LoRA, K/V and the embedding for Custom Diffusion, the embedding for textual inversion) and
the fingerprint of the base checkpoint it was made from; `load_customized` rebuilds the model on top of
that base and refuses any other.
"""
from __future__ import annotations

from pathlib import Path

import torch

from core import checkpoint
from core.config import Config
from core.data import base_classes
from minidiff.lora import add_lora, merge_lora
from minidiff.text2img import TextToImage
from minidiff.train_diffusion import load_diffusion

def placeholder_init(model: TextToImage, class_names) -> torch.Tensor:
    """Mean token embedding of the base class names: a neutral 'some object' starting point."""
    ids = torch.tensor([model.tokenizer.stoi[c] for c in class_names], device=model.device)
    return model.text.token_embedding.weight[ids].mean(dim=0).detach()


def prepare(model: TextToImage, cfg: Config, class_names) -> list[torch.nn.Parameter]:
    """Freeze `model` except what cfg.customize.method trains (adding LoRA adapters or the placeholder
    embedding where the method has them); returns the trainable parameters."""
    method, token = cfg.customize.method, cfg.customize.placeholder
    model.requires_grad_(False)
    if method in ("full", "full+prior"):
        model.unet.requires_grad_(True)
    elif method == "lora":
        for adapter in add_lora(model.unet, cfg.customize.lora_rank, cfg.customize.lora_convs):
            adapter.A.requires_grad_(True)
            adapter.B.requires_grad_(True)
    elif method in ("custom", "ti"):
        model.add_placeholder(token, placeholder_init(model, class_names)).requires_grad_(True)
        if method == "custom":
            for name, module in model.unet.named_modules():
                if name.endswith("attn2"):
                    module.to_k.weight.requires_grad_(True)
                    module.to_v.weight.requires_grad_(True)
    else:
        raise ValueError(f"unknown customization method {method!r}")
    return [p for p in model.parameters() if p.requires_grad]


def trainable_state(model: TextToImage) -> dict[str, torch.Tensor]:
    """The parameters the method trains (all that differs from the base), by name."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_customized(path, model: TextToImage, cfg: Config, base_path, metrics: dict) -> None:
    checkpoint.save(path, {"kind": "customized", "config": cfg.to_dict(), "step": metrics.get("steps", 0),
                           "method": cfg.customize.method, "reg": cfg.customize.reg,
                           "base_path": str(base_path), "base_fingerprint": checkpoint.fingerprint(base_path),
                           "delta": trainable_state(model), "metrics": metrics})


def load_customized(path, base_path=None, device="cpu", merge: bool = True) -> tuple[TextToImage, object, Config]:
    """Base model + stored delta -> (customized TextToImage in eval mode, Diffusion, config).

    base_path defaults to the one recorded at training time; a base with another fingerprint is refused.
    LoRA adapters are merged into the weights for inference unless merge=False.
    """
    payload = checkpoint.load(path, kind="customized")
    base_path = Path(base_path or payload["base_path"])
    found = checkpoint.fingerprint(base_path)
    if found != payload["base_fingerprint"]:
        raise checkpoint.CheckpointMismatch(
            f"{path} was customized from a base checkpoint with fingerprint {payload['base_fingerprint']}, "
            f"but {base_path} has fingerprint {found}: load it on top of the base it was trained from")
    model, diffusion, _, _ = load_diffusion(base_path, device)
    cfg = Config.from_dict(payload["config"])
    prepare(model, cfg, base_classes(cfg.data))
    missing = set(payload["delta"]) - {name for name, _ in model.named_parameters()}
    if missing:
        raise checkpoint.CheckpointMismatch(f"{path}: parameters {sorted(missing)[:5]} do not exist in the model")
    state = model.state_dict()
    state.update({k: v.to(state[k].device) for k, v in payload["delta"].items()})
    model.load_state_dict(state)
    if merge:
        merge_lora(model.unet)
    return model.requires_grad_(False).eval(), diffusion, cfg
