"""evaluate.py: --ref parsing, image reading, and `fid` end to end on a tiny npz with a tiny
evaluator."""
import json

import numpy as np
import pytest
from PIL import Image

import evaluate
from core.cli import make_config
from core.data import load_split
from core.cache import cache_root
from core.images import read_images
from tests.conftest import save_untrained_evaluator

OVERRIDES = ["--data.shapes_train_size=300", "--data.shapes_test_size=100",
             "--evalnet.channels=8,16,32"]


def tiny_setup(tmp_path, with_evaluator=True):
    """Overrides for a tiny shapes run in tmp_path, an (untrained) evaluator there, and a 40-image
    npz."""
    overrides = [f"--run.out_dir={tmp_path}", *OVERRIDES]
    cfg = make_config("quick", overrides)
    if with_evaluator:
        save_untrained_evaluator(cfg)
    npz = tmp_path / "samples.npz"
    np.savez(npz, images=load_split(cfg.data, "train", cache_root(cfg)).x[:40].numpy())
    return overrides, npz


def test_parse_ref():
    assert evaluate.parse_ref("cifar10:train") == ("cifar10", "train", None)
    assert evaluate.parse_ref("shapes:test:circle, star") == ("shapes", "test", ("circle", "star"))
    for bad in ("cifar10", "cifar10:", "a:b:c:d"):
        with pytest.raises(ValueError, match="DATASET:SPLIT"):
            evaluate.parse_ref(bad)


def test_read_images_npz_and_png_folder(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x)
    assert np.array_equal(read_images(str(tmp_path / "a.npz")), x)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    assert np.array_equal(read_images(str(folder)), x)
    np.savez(tmp_path / "b.npz", x=x.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        read_images(str(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", pics=x)
    with pytest.raises(ValueError, match="no array named 'x' or 'images'"):
        read_images(str(tmp_path / "c.npz"))


def test_fid_end_to_end(tmp_path):
    overrides, npz = tiny_setup(tmp_path)
    out = tmp_path / "fid.json"
    summary = evaluate.main(["fid", "--images", str(npz), "--ref", "shapes:test", "--out", str(out),
                             *overrides])
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 40 and saved["n_reference"] == 100 and saved["net"] == "eval"
    assert saved["kid"]["n_a"] == 40 and saved["precision_recall"]["n_fake"] == 40
    assert saved["fd"] >= 0 and saved["fd"] == summary["fd"]
    assert saved["network"]["hash"] and len(saved["classes"]) == 10
    # a class subset narrows the reference set; the real-image cache in tmp_path is reused
    subset = evaluate.main(["fid", "--images", str(npz), "--ref", "shapes:test:circle,star",
                            "--out", str(out), *overrides])
    assert subset["n_reference"] == 20 and subset["classes"] == ["circle", "star"]


def test_fid_clear_errors(tmp_path, capsys):
    overrides, npz = tiny_setup(tmp_path, with_evaluator=False)
    cases = [(["--ref", "shapes:test"], "python train.py eval-net --preset quick"),
             (["--ref", "cifar10:train", "--preset", "quick"], "use --preset cifar10"),
             (["--ref", "shapes:test", "--data.resolution=32",
               "--diffusion.attention_resolutions=16,8"],
              "data.resolution=32"),
             (["--ref", "shapes:test", "--data.resolutoin=32"], "did you mean 'resolution'")]
    for args, message in cases:
        with pytest.raises(SystemExit) as err:
            evaluate.main(["fid", "--images", str(npz), *args, *overrides])
        assert message in str(err.value), (args, str(err.value))


def test_fid_inception_without_weights_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    overrides, npz = tiny_setup(tmp_path, with_evaluator=False)
    with pytest.raises(SystemExit, match="Inception-v3 weights not found.*--download"):
        evaluate.main(["fid", "--images", str(npz), "--ref", "shapes:test", "--net", "inception",
                       *overrides])
    assert not (tmp_path / "torch").exists()  # nothing downloaded, no partial file left behind


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_read_only_commands_write_nothing(tmp_path, capsys):
    """Issue row 6: `table` prints and writes nothing; `report` writes only its --out."""
    run = tmp_path / "runs"
    (run / "quick").mkdir(parents=True)
    before = tree(tmp_path)
    evaluate.main(["table", f"--run.out_dir={run}"])
    assert ("no finished drift or GAN transfer runs" in capsys.readouterr().out
            and tree(tmp_path) == before)
    evaluate.main(["report", f"--run.out_dir={run}", "--out", str(tmp_path / "page.html")])
    assert tree(tmp_path) == sorted(before + ["page.html"])


@pytest.mark.parametrize("args, message", [  # issue rows 7 and 10
    (["sample", "--ckpt", "x.pt", "--prompt", "a photo of a star", "--gudiance=-3", "--foo.bar=1"],
     "unrecognized argument for `sample`: --gudiance=-3 (did you mean --guidance?)"),
    (["classify", "--gudiance=3"], "unrecognized argument for `classify`: --gudiance=3"),
    (["classify", "--foo.bar=1"], "unknown config section 'foo'"),
    (["table", "--diffusion.lrr=1"], "did you mean 'lr'"),
])
def test_unknown_options_are_refused_naming_them(args, message):
    with pytest.raises(SystemExit) as err:
        evaluate.main(args)
    assert message in str(err.value)


def test_bad_counts_are_refused_by_the_parser():
    for bad in (["--n", "0"], ["--steps", "0"], ["--guidance", "nan"]):
        with pytest.raises(SystemExit) as err:
            evaluate.main(["sample", "--ckpt", "x.pt", "--prompt", "a photo of a star", *bad])
        assert (str(err.value.code).startswith("error: argument --")
                and "must be" in str(err.value.code))
