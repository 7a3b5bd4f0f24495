"""Bad input stops train.py and evaluate.py with one line, `error: ...`, exit status 1 and no
traceback, before any work or without losing any: broken checkpoints and results files, paths
that are not UTF-8, hostile image folders, bad prompts and settings, a diverging CLIP, Ctrl-C and
a full disk."""
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train
from core import checkpoint
from core.cli import make_config
from core.errors import DataError
from core.user_images import folder_digest, load_image_folder
from pipeline.command import user_errors
from tests.conftest import save_untrained_diffusion

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--data.shapes_train_size=200", "--data.shapes_test_size=100"]
TINY_CLIP = [*DATA, "--clip.width=16", "--clip.layers=1", "--clip.heads=2", "--clip.embed_dim=16",
             "--clip.image_channels=8,16", "--clip.batch_size=16"]


def one_line_error(main, args, *fragments) -> str:
    """main(args) must exit with one line `error: ...` holding every fragment; returns that line."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    message = exit_.value.code
    assert (isinstance(message, str) and message.startswith("error: ")
            and "\n" not in message), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def run_cli(args, cwd) -> subprocess.CompletedProcess:
    """A real command line (str or bytes arguments), as a shell would start it."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_one_line_exit(result: subprocess.CompletedProcess, *fragments) -> None:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def png(path: Path, size: int = 8) -> None:
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(path)


def concept_folder(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        png(folder / f"ok{i}.png")
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(overrides, path) of an untrained tiny diffusion checkpoint."""
    return save_untrained_diffusion(tmp_path_factory.mktemp("base"))


# ------------------------------------------------------------------------------------------- files

def test_a_garbage_checkpoint_is_one_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    one_line_error(evaluate.main, ["sample", "--ckpt", str(garbage),
                                   "--prompt", "a photo of a star"],
                   f"{garbage} is not a readable checkpoint (", "delete it and rerun")
    torch.save([1, 2], tmp_path / "list.pt")              # a torch file, but not a checkpoint
    one_line_error(evaluate.main, ["sample", "--ckpt", str(tmp_path / "list.pt"),
                                   "--prompt", "a photo of a star"],
                   "list.pt holds a list, not a checkpoint of this project")


@pytest.mark.parametrize("content", ["[]", "null"])
def test_a_results_file_that_is_not_an_object_is_one_line(tmp_path, content):
    metrics = tmp_path / "quick" / "clip" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(content)
    one_line_error(train.main, ["clip", f"--run.out_dir={tmp_path}", *TINY_CLIP],
                   f"{metrics} is not a run's results (it holds {content}",
                   "delete it, or rerun with --force")
    assert metrics.read_text() == content                 # left for the user to look at


def test_a_customized_checkpoint_without_its_base_is_one_line(tmp_path, base):
    overrides, base_path = base
    cfg = make_config("quick", overrides)
    orphan, moved = tmp_path / "orphan.pt", tmp_path / "moved.pt"
    checkpoint.save(orphan, {"kind": "customized", "config": cfg.to_dict(), "step": 0,
                             "delta": {}, "metrics": {}})
    checkpoint.save(moved, {"kind": "customized", "config": cfg.to_dict(), "step": 0,
                            "delta": {}, "metrics": {},
                            "base_path": str(tmp_path / "gone.pt"), "base_fingerprint": "0" * 12})
    drift = ["drift", f"--run.out_dir={tmp_path / 'runs'}", *overrides[1:]]
    one_line_error(evaluate.main, [*drift, "--custom", str(orphan)],
                   f"{orphan} does not record its base model")
    one_line_error(evaluate.main, [*drift, "--custom", str(moved)],
                   f"its base model {tmp_path / 'gone.pt'} does not exist")
    assert not (tmp_path / "runs").exists()               # refused before the drift floor was made
    sample = ["sample", "--ckpt", str(base_path), "--prompt", "a photo of a star",
              "--out", str(tmp_path / "s")]
    one_line_error(evaluate.main, [*sample, "--custom", str(orphan)],
                   f"{orphan} is not a complete customized checkpoint (it lacks base_fingerprint)")
    one_line_error(evaluate.main, [*sample, "--custom", str(moved)], "fingerprint 000000000000")
    assert not (tmp_path / "s.png").exists()


def test_a_full_disk_keeps_the_previous_checkpoint_and_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"kind": "test", "step": 1})

    def full_disk(obj, f):
        f.write(b"part of a checkpoint")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed\n"
                           "more lines")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as exit_, user_errors(debug=False):
        checkpoint.save(path, {"kind": "test", "step": 2})
    assert exit_.value.code == (f"error: could not write {path}: "
                                "PytorchStreamWriter failed writing file data/0: "
                                "file write failed; the previous checkpoint is kept")
    monkeypatch.undo()
    assert (checkpoint.load(path)["step"] == 1
            and [p.name for p in tmp_path.iterdir()] == ["last.pt"])


# ------------------------------------------------------------------------------- paths and folders

def test_paths_that_are_not_utf8_are_refused_before_any_work(tmp_path):
    """Undecodable bytes on a command line reach Python as lone surrogates (os.fsdecode)."""
    result = run_cli([os.fsencode(ROOT / "train.py"), b"clip", b"--run.out_dir=runs\xff"],
                     cwd=tmp_path)
    assert_one_line_exit(result, "error: run.out_dir must be UTF-8 text, got b'runs\\xff'")
    assert list(tmp_path.iterdir()) == []
    images = os.fsdecode(b"mine\xff")
    one_line_error(train.main,
                   ["customize", f"--run.out_dir={tmp_path}", f"--customize.images={images}"],
                   "customize.images must be UTF-8 text, got b'mine\\xff'")
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path):
    folder = concept_folder(tmp_path / "mine")
    try:
        with open(os.path.join(os.fsencode(folder), b"bad\xff.png"), "wb") as f:
            f.write(b"")
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    for read in (lambda: load_image_folder(folder, 16), lambda: folder_digest(folder)):
        with pytest.raises(DataError, match="a file name is not UTF-8 text") as err:
            read()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("side", [20000, 10000])
def test_a_decompression_bomb_is_refused_quickly(tmp_path, side):
    """A PNG header claiming side x side pixels over a few bytes of data: above Pillow's limit
    (89M pixels; 2x that is Pillow's own error, below it only a warning and a huge decode) it is
    refused without decoding."""
    folder = concept_folder(tmp_path / "mine")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)   # 8-bit RGB
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                      + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                                      + chunk(b"IEND", b""))
    start = time.time()
    with pytest.raises(DataError, match="bomb.png is too large to open safely") as err:
        load_image_folder(folder, 16)
    assert time.time() - start < 1 and "\n" not in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_named_like_an_image_is_refused_within_a_second(tmp_path):
    folder = concept_folder(tmp_path / "mine")
    os.mkfifo(folder / "x.png")                    # opening it would wait forever for a writer
    for read in (lambda: load_image_folder(folder, 16), lambda: folder_digest(folder)):
        raised = []

        def target():
            try:
                read()
            except DataError as err:
                raised.append(str(err))

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout=1)
        assert not thread.is_alive() and raised == [
            f"{folder}: x.png is not a .png/.jpg/.jpeg file "
            "(the folder must hold only the concept's images)"]


# ---------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("override, message", [
    ("--customize.prompt=a photo of a {} zebra",
     "customize.prompt: unknown word 'zebra' in 'a photo of a <new0> zebra'; known words: "),
    ("--customize.prior_prompt=a foto of a star", "customize.prior_prompt: unknown word 'foto'"),
    ("--customize.prompt=a {} " + "star " * 20,
     "has 22 words; at most 14 fit the text encoder's context"),
    ("--customize.prompt=a photo of a {0}",
     "needs exactly one {} for the placeholder and no other braces"),
    ("--customize.prompt=a {} {", "needs exactly one {} for the placeholder and no other braces"),
])
def test_bad_customization_prompts_are_refused_before_any_work(tmp_path, override, message):
    one_line_error(train.main, ["customize", f"--run.out_dir={tmp_path}", override], message)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_prompt_on_the_command_line_is_one_line_and_exit_status_1(tmp_path):
    result = run_cli([ROOT / "train.py", "customize", f"--run.out_dir={tmp_path}",
                      "--customize.prompt=a photo of a {} zebra"], cwd=tmp_path)
    assert_one_line_exit(result, "customize.prompt: unknown word 'zebra'")
    assert list(tmp_path.iterdir()) == []


def test_bad_sampling_settings_and_prompts_are_one_line(tmp_path, base):
    _, base_path = base
    sample = ["sample", "--ckpt", str(base_path), "--out", str(tmp_path / "s")]
    one_line_error(evaluate.main, [*sample, "--prompt", "a photo of a star", "--run.device=tpu"],
                   "run.device='tpu'; valid: auto, cpu, cuda, cuda:N, mps")
    one_line_error(evaluate.main, [*sample, "--prompt", "a photo of a star", "--eta", "5"],
                   "diffusion.eta=5.0 is above its maximum 1")
    one_line_error(evaluate.main, [*sample, "--prompt", "a foto of a strar"],
                   "unknown words 'foto', 'strar' in 'a foto of a strar'; known words: ", " star,")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ref, message", [
    ("shapes:test:zebra",
     "--ref 'shapes:test:zebra': unknown or no classes ['zebra']; shapes has "),
    ("shapes:val", "--ref 'shapes:val': the split is one of train, test, got 'val'"),
])
def test_bad_fid_references_are_one_line(tmp_path, ref, message):
    one_line_error(evaluate.main, ["fid", "--images", str(tmp_path / "none.npz"), "--ref", ref,
                                   f"--run.out_dir={tmp_path}"], message)


def test_a_pickled_npz_is_one_line(tmp_path):
    npz = tmp_path / "pickled.npz"
    np.savez(npz, x=np.array([{"code": "runs on load"}], dtype=object))
    one_line_error(evaluate.main, ["fid", "--images", str(npz), "--ref", "shapes:test",
                                   f"--run.out_dir={tmp_path}"],
                   f"{npz} is not an npz of plain arrays (")


# -------------------------------------------------------------------------------- the command line

def test_debug_after_the_subcommand_is_accepted(tmp_path, capsys):
    (tmp_path / "quick").mkdir()
    evaluate.main(["table", "--debug", f"--run.out_dir={tmp_path}"])
    assert "no finished drift or GAN transfer runs" in capsys.readouterr().out


def test_ctrl_c_in_evaluate_is_one_line(tmp_path, monkeypatch):
    def interrupted(args, overrides):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "run_table", interrupted)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["table", f"--run.out_dir={tmp_path}"])
    assert exit_.value.code == "interrupted: rerun the same command"


def test_an_override_value_with_spaces_needs_no_stage(tmp_path, capsys):
    out_dir = tmp_path / "runs with space"
    assert train.main(["--plan", f"--run.out_dir={out_dir}"]) is None
    plan = capsys.readouterr().out
    assert "runs with space" in plan and len(plan.splitlines()) > 10
    assert not out_dir.exists()                            # --plan runs nothing


# -------------------------------------------------------------------------------------- divergence

def test_a_diverging_clip_stops_with_one_line(tmp_path):
    message = one_line_error(train.main, ["clip", f"--run.out_dir={tmp_path}", *TINY_CLIP,
                                          "--clip.lr=1e6", "--clip.warmup=1", "--clip.steps=30"],
                             "training diverged")
    assert (message.startswith("error: clip: loss is nan at step ")
            or message.startswith("error: clip: the logit scale is "))
    assert not (tmp_path / "quick" / "clip" / "metrics.json").exists()
    assert not (tmp_path / "quick" / "clip" / "clip.pt").exists()
