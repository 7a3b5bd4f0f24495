"""A user's own concept (customize.images): images of any size and mode made into training images,
every bad input refused naming the file, and the folder learned and measured end to end."""
import numpy as np
import pytest
from PIL import Image

import evaluate
from core.errors import DataError
from core.user_images import load_image_folder
from minidiff.measure_drift import drift_floor, drift_stage
from minidiff.train_customize import customize
from tests.conftest import tiny_base_model


def write(folder, name, array, mode=None, **save):
    folder.mkdir(exist_ok=True)
    Image.fromarray(array, mode).save(folder / name, **save)


def test_mixed_sizes_and_modes_become_rgb_squares(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path, "a.png", rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))    # RGB, tall
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)                                    # transparent
    write(tmp_path, "b.png", rgba)
    write(tmp_path, "c.png", rng.integers(0, 256, (10, 10), dtype=np.uint8))        # grayscale
    write(tmp_path, "d.png", np.full((12, 12), 65535, dtype=np.uint16))             # 16-bit gray
    write(tmp_path, "e.jpg", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),     # JPEG, wide
          quality=90)
    images = load_image_folder(tmp_path, 16)
    assert images.shape == (5, 16, 16, 3) and images.dtype.is_floating_point is False
    assert (images[1] == 255).all()       # fully transparent -> composited onto white
    assert (images[3] == 255).all()       # 16-bit full scale -> 8-bit full scale
    assert (images[2, ..., 0] == images[2, ..., 1]).all()  # gray -> three equal channels


@pytest.mark.parametrize("bad, message", [
    ("notes.txt", "notes.txt is not a .png/.jpg/.jpeg file"),
    ("broken.png", "broken.png is not a readable image"),
    ("few", "holds 2 images; a concept needs 3 to 20"),
    ("many", "holds 21 images"),
])
def test_bad_folders_are_refused_naming_the_file(tmp_path, bad, message):
    n = {"few": 2, "many": 21}.get(bad, 3)
    for i in range(n):
        write(tmp_path, f"{i}.png", np.zeros((8, 8, 3), dtype=np.uint8))
    if bad == "notes.txt":
        (tmp_path / bad).write_text("hello")
    if bad == "broken.png":
        (tmp_path / bad).write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=message):
        load_image_folder(tmp_path, 16)
    with pytest.raises(DataError, match="not a folder"):
        load_image_folder(tmp_path / "missing", 16)


def test_a_users_folder_is_learned_and_measured(tmp_path):
    cfg = tiny_base_model(tmp_path / "runs", "--classifier.n_images=18",
                          "--classifier.n_timesteps=4", "--classifier.stages=2,4",
                          "--classifier.keep=2,1", "--drift.pairs=2", "--drift.attribute_prompts=1",
                          "--drift.attribute_pairs=2", "--evalnet.epochs=1")
    evaluate.main(["export", "--class", "heart", "--n", "4", "--out", str(tmp_path / "mine"),
                   f"--run.out_dir={tmp_path / 'runs'}", "--data.shapes_train_size=200",
                   "--data.shapes_test_size=100"])
    cfg = cfg.updated("customize", method="lora", steps=2, images=str(tmp_path / "mine"))
    metrics = customize(cfg)
    assert (metrics["name"] == "b0-lora-none-s0-mine" and metrics["k_images"] == 4
            and metrics["concept"] == "folder mine")
    assert (metrics["fidelity"]["recognised"] is None
            and -1 <= metrics["fidelity"]["nearest_similarity"] <= 1)
    drift_floor(cfg)
    drift = drift_stage(cfg)
    assert (drift["concept_class"] == "folder mine"
            and drift["fidelity"]["classified_images"] == "training images")
