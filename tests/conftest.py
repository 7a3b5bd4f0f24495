"""Shared test fixtures: small configs, a temporary run folder, and a deterministic torch state."""
import pytest
import torch

from core.config import make_config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg(tmp_path):
    """The quick preset shrunk to seconds: 8x8-class shapes at 16x16, few images, tiny models."""
    return make_config("quick", [f"--run.out_dir={tmp_path}", "--data.shapes_train_size=400",
                                 "--data.shapes_test_size=200"])
