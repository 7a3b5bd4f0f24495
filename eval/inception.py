"""Optional Inception-v3 features for FID (Heusel et al. 2017), from torchvision's pretrained
weights.

The project's own evaluator (eval.evalnet) is the default feature network and needs no download.
This module is for users who have, or can download once, torchvision's
`Inception_V3_Weights.IMAGENET1K_V1` file (about 100 MB). Nothing is downloaded unless asked for
(`load_inception(download=True)`, or `evaluate.py fid --net inception --download`): without the file
it stops at once with a message saying where to put it, so no test or run ever hangs on a network
that is not there.

Caveat: this is torchvision's Inception-v3, not the TensorFlow graph (`pt_inception-2015-12-05`)
that the FID papers and pytorch-fid use. Weights, some layers and the resizing differ, and our
reference images may differ too (e.g. the offline CIFAR-10 copy is JPEG-compressed), so the FIDs
computed here are comparable with each other but not with published numbers.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import Inception_V3_Weights, inception_v3

from core import checkpoint

WEIGHTS = Inception_V3_Weights.IMAGENET1K_V1
INPUT_SIZE = 299
CHUNK = 50  # images per Inception pass: activations at 299x299 are large


def weights_file() -> Path:
    """Where torch.hub keeps the weights:
    $TORCH_HOME/hub/checkpoints/inception_v3_google-<hash>.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(WEIGHTS.url).path)


def _missing(path: Path, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Inception-v3 weights {reason}: {path}. FID with --net inception needs torchvision's "
        f"IMAGENET1K_V1 weights, downloaded once with a network: rerun with --download (or call "
        f"load_inception(download=True)), or fetch {WEIGHTS.url} on a machine with a network and "
        "copy the file to that path (set TORCH_HOME to choose the folder). Without them, use --net "
        "eval, the project's own evaluator.")


class InceptionFeatures(nn.Module):
    """(B, 3, H, W) images in [-1, 1] -> (B, 2048) Inception-v3 pool features (after global average
    pool).

    Images are resized to 299x299 (bilinear). The Google weights expect inputs in [-1, 1], which is
    what core.data.to_float gives, so torchvision's `transform_input` (an ImageNet-normalisation
    undo) is off.
    """

    def __init__(self, state_dict: dict):
        super().__init__()
        net = inception_v3(weights=None, aux_logits=False, init_weights=False,
                           transform_input=False)
        net.load_state_dict({k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")})
        net.fc = nn.Identity()  # the 2048-d pool features instead of the 1000 ImageNet logits
        self.net = net
        self.checkpoint_hash: str | None = None

    def features(self, x):
        return torch.cat([self.net(F.interpolate(chunk, size=(INPUT_SIZE, INPUT_SIZE),
                                                 mode="bilinear", align_corners=False))
                          for chunk in x.split(CHUNK)])

    def forward(self, x):
        return self.features(x)


def load_inception(device="cpu", download: bool = False) -> InceptionFeatures:
    """Inception-v3 feature extractor, eval mode, frozen; downloads the weights only if
    download=True."""
    path = weights_file()
    if not path.exists():
        if not download:
            raise _missing(path, "not found")
        try:
            torch.hub.load_state_dict_from_url(WEIGHTS.url, progress=True, check_hash=True)
        except Exception as err:  # no network, proxy, disk full: say what to do instead
            raise _missing(path, f"could not be downloaded ({type(err).__name__}: {err})") from None
    model = InceptionFeatures(torch.load(path, map_location="cpu", weights_only=True))
    model.checkpoint_hash = "inception-" + checkpoint.fingerprint(path)
    return model.to(device).eval().requires_grad_(False)
