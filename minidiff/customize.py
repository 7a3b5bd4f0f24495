"""Customization methods: which parameters each one trains.

    full        DreamBooth (Ruiz et al. 2023): every UNet weight.
    full+prior  DreamBooth with prior preservation (Sec. 3.3, Eq. 2): every UNet weight (the loss
                differs).
    lora        LoRA (Hu et al. 2021): rank-r adapters on the attention projections (optionally the
                residual-block convolutions); the base weights stay frozen.
    custom      Custom Diffusion (Kumari et al. 2023, Sec. 3.1): only the cross-attention key/value
                projections W_k, W_v, plus the placeholder token's embedding.
    ti          Textual inversion (Gal et al. 2023, Sec. 3): only the placeholder token's embedding.

The placeholder (e.g. <new0>) is a reserved token that pretraining never saw. DreamBooth and LoRA
use it as a rare identifier with its fixed embedding; textual inversion and Custom Diffusion learn
its embedding, initialised at the mean embedding of the base class names.

A customized checkpoint stores only what the method trains (`trainable_state`: the whole UNet for
full finetuning, the adapters for LoRA, K/V and the embedding for Custom Diffusion, the embedding
for textual inversion); minidiff/train_customize.py writes and loads it on top of its base model.
"""
from __future__ import annotations

import torch

from core.config import Config
from minidiff.lora import add_lora
from minidiff.text2img import TextToImage


def placeholder_init(model: TextToImage, class_names) -> torch.Tensor:
    """Mean token embedding of the base class names: a neutral 'some object' starting point."""
    ids = torch.tensor([model.tokenizer.stoi[c] for c in class_names], device=model.device)
    return model.text.token_embedding.weight[ids].mean(dim=0).detach()


def prepare(model: TextToImage, cfg: Config, class_names) -> list[torch.nn.Parameter]:
    """Freeze `model` except what cfg.customize.method trains (adding LoRA adapters or the
    placeholder embedding where the method has them); returns the trainable parameters."""
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
    return {name: p.detach().cpu().clone()
            for name, p in model.named_parameters() if p.requires_grad}
