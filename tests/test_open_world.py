"""End to end on a tiny model: the learning-rate-0 control drifts by exactly nothing in every group;
a real update drifts; the groups split classes and templates as configured; no measured image is an
image the regularizer or the prior trained on."""
import pytest
import torch

from core.data import base_classes
from minidiff.measure_drift import drift_floor, drift_stage
from minidiff.open_world import GROUPS, group_of, pair_prompts
from minidiff.regularizers import anchor_prompts, heldout_split
from minidiff.text2img import SEED_RANGES, BANK_SIZE, initial_noise, seed_range
from minidiff.train_customize import customize
from tests.conftest import tiny_base_model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base_model(tmp_path_factory.mktemp("ow"), "--classifier.n_images=18",
                           "--classifier.n_timesteps=4", "--classifier.stages=2,4",
                           "--classifier.keep=2,1", "--drift.pairs=2",
                           "--drift.attribute_prompts=2", "--drift.attribute_pairs=2",
                           "--evalnet.epochs=1")


def run(base, lr, reg="none"):
    cfg = base.updated("customize", method="full", reg=reg, steps=3, lr=lr)
    customize(cfg, force=True)
    drift_floor(cfg)
    return drift_stage(cfg, force=True)


def test_learning_rate_zero_control_has_exactly_zero_drift(base):
    r = run(base, 0.0)
    for g in GROUPS:
        s, a = r["semantic"][g], r["appearance"][g]
        assert s["flip_rate"] == 0 and s["mean_change"] == 0 and s["worst_change"] == 0, g
        assert a["cdi"] == 0 and a["delta_e"] == 0 and a["psnr"] is None, g     # psnr infinite
        assert a["reassigned"] == 0 and a["feature_distance"] == 0, g
        floor = r["appearance_floor"][g]
        assert floor["cdi"] > 0  # the floor compares other seeds: not trivially zero
        assert a["set_cdi"] == floor["set_cdi"] > 0, g  # the same two sets, in the other order
        assert a["mean_fd_per_class"] == pytest.approx(floor["mean_fd_per_class"], rel=1e-6), g
    assert r["attributes"]["before"] == r["attributes"]["after"]


def test_an_update_moves_the_generations(base):
    r = run(base, 1e-2)
    assert (r["appearance"]["anchored"]["cdi"] > 0
            and r["appearance"]["heldout_classes"]["psnr"] is not None)
    # every class at every timestep of the grid
    assert r["classifier"]["unet_passes_per_image"] == 9 * 4


def test_groups_split_classes_and_templates(base):
    classes = base_classes(base.data)
    held = base.drift.heldout_classes
    assert (heldout_split(base)
            == ([c for c in classes if c not in held], [c for c in classes if c in held]))
    assert (group_of(base, held[0], False) == "heldout_classes"
            and group_of(base, held[0], True) == "heldout_both")
    assert group_of(base, "circle", True) == "heldout_templates"
    anchors = " ".join(anchor_prompts(base))
    assert not any(c in anchors for c in held)  # no anchor names a held-out class
    prompts, _, groups = pair_prompts(base)
    assert {g for g in groups} == set(GROUPS) and len(prompts) == 2 * 9 * base.drift.pairs


def test_no_measured_image_is_a_training_image(base):
    """Anchor, prior, fidelity, drift and floor images draw their initial noise from disjoint seed
    ranges; with the same model and prompt, equal noise would mean equal images."""
    ranges = {kind: set(seed_range(kind, BANK_SIZE, bank)) for kind in SEED_RANGES
              for bank in (0, 3)}
    kinds = list(ranges)
    assert all(not ranges[a] & ranges[b] for i, a in enumerate(kinds) for b in kinds[i + 1:])
    drift = initial_noise(seed_range("drift", 4, bank=1), 8)
    trained = initial_noise(seed_range("anchor", 64) + seed_range("prior", 32), 8)
    assert not any(torch.equal(d, t) for d in drift for t in trained)
    with pytest.raises(ValueError, match="range"):
        seed_range("drift", BANK_SIZE + 1)


def test_the_floor_is_per_bank(base):
    """Repeat k of a customization compares against base images of bank k, so repeats are
    independent."""
    from core import checkpoint
    from minidiff.measure_drift import floor_dir
    sides = []
    for seed in (0, 1):
        cfg = base.updated("customize", seed=seed)
        drift_floor(cfg)
        sides.append(checkpoint.load(floor_dir(cfg) / "side.pt")["drift"]["pairs"])
    assert not torch.equal(*sides)
