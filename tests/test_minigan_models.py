"""minigan models: generator, discriminator, hyper-modulation, self-initialization, DiffAugment."""
import hashlib

import pytest
import torch

from minigan.augment import diff_augment
from minigan.discriminator import Discriminator, conditional_from_unconditional, minibatch_stddev
from minigan.generator import ConditionalGenerator, Generator
from minigan.hypermod import HyperModulatedGenerator
from minigan.quality import memorization
from minigan.selfinit import self_initialize
from minigan.separation import class_separation, embedding_sensitivity, separation_ratio


def count(params):
    return sum(p.numel() for p in params)


def randomized_generator(resolution=16, channels=16, seed=0):
    """A generator whose zero-initialized parameters (biases, noise strengths) are random too, so
    that noise and bias paths matter in comparisons."""
    torch.manual_seed(seed)
    g = Generator(resolution, z_dim=16, w_dim=16, channels=channels, mapping_layers=2)
    with torch.no_grad():
        for layer in g.conv_layers():
            layer.bias.normal_(0, 0.3)
            layer.noise_strength.normal_(0, 0.3)
    return g


def state_hash(module):
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- generator

@pytest.mark.parametrize("resolution", [16, 32])
def test_generator_shapes(resolution):
    g = Generator(resolution, z_dim=16, w_dim=16,
                  channels=[32, 16, 16, 8][: resolution.bit_length() - 2], mapping_layers=2)
    img, feats = g(torch.randn(3, 16), return_features=True)
    assert img.shape == (3, 3, resolution, resolution)
    assert [f.shape[-1] for f in feats] == [4, 8, 16, 32][: len(feats)]
    assert feats[-1].shape[-1] == resolution
    assert len(g.conv_layers()) == 1 + 2 * (len(feats) - 1)


def test_generator_same_noise_same_output():
    g = randomized_generator()
    z = torch.randn(4, 16)
    noise = g.make_noise(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(g(z, noise=noise), g(z, noise=noise))
    assert not torch.allclose(g(z, noise=noise), g(z, noise=g.make_noise(4)))


def test_generator_weight_override_reproduces_output():
    g = randomized_generator()
    z, noise = torch.randn(4, 16), g.make_noise(4)
    weights = [layer.conv_weight().expand(4, -1, -1, -1, -1) for layer in g.conv_layers()]
    biases = [layer.bias.expand(4, -1) for layer in g.conv_layers()]
    ref = g(z, noise=noise)
    assert torch.allclose(g(z, noise=noise, weights=weights, biases=biases), ref, atol=1e-5)
    weights[0] = weights[0] * 1.5  # the override is really used
    assert not torch.allclose(g(z, noise=noise, weights=weights), ref, atol=1e-3)


def test_per_sample_weights_are_per_sample():
    g = randomized_generator()
    z, noise = torch.randn(3, 16), g.make_noise(3)
    scales = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1, 1)
    # sample i: its own kernels, (3, 1, 1, 1, 1) * (O, I, 3, 3) -> (3, O, I, 3, 3)
    weights = [scales * layer.conv_weight() for layer in g.conv_layers()]
    out = g(z, noise=noise, weights=weights)
    for i in range(3):
        single = g(z[i:i + 1], noise=[n[i:i + 1] for n in noise],
                   weights=[w[i:i + 1] for w in weights])
        assert torch.allclose(out[i:i + 1], single, atol=1e-5)


def test_channels_validation():
    with pytest.raises(ValueError):
        Generator(12)
    with pytest.raises(ValueError):
        Generator(16, channels=[8, 8])
    assert Generator(16, channels={"4": 8, "8": 8, "16": 4}).to_rgb.in_channels == 4


def test_conditional_generator_starts_as_base_and_learns_classes():
    g = randomized_generator()
    cg = ConditionalGenerator(g, n_classes=3)
    z, noise = torch.randn(3, 16), g.make_noise(3)
    ref = g(z, noise=noise)
    # zero embedding: the base G
    assert torch.equal(cg(z, torch.tensor([0, 1, 2]), noise=noise), ref)
    cg.class_embed.weight.data[1] = 1.0
    out = cg(z, torch.tensor([0, 1, 2]), noise=noise)
    assert torch.equal(out[[0, 2]], ref[[0, 2]]) and not torch.allclose(out[1], ref[1], atol=1e-3)


# --------------------------------------------------------------------------------- hyper-modulation

@pytest.mark.parametrize("head", ["dense", "lowrank"])
def test_identity_modulation_reproduces_base(head):
    g = randomized_generator()
    hg = HyperModulatedGenerator(g, n_classes=5, head=head, rank=4, embed_dim=16)
    z, noise = torch.randn(5, 16), g.make_noise(5)
    ref, ref_feats = g(z, noise=noise, return_features=True)
    labels = torch.arange(5)
    # random heads: not identity
    assert not torch.allclose(hg(z, labels, noise=noise), ref, atol=1e-3)
    hg.set_identity_modulation()
    for c in range(5):
        out, feats = hg(z, torch.full((5,), c), noise=noise, return_features=True)
        assert torch.allclose(out, ref, atol=1e-5)
        assert all(torch.allclose(f, r, atol=1e-5) for f, r in zip(feats, ref_feats))


@pytest.mark.parametrize("head", ["dense", "lowrank"])
def test_a_mixed_batch_gives_each_sample_its_own_class_kernels(head):
    """Kernels are built once per class present and handed to that class's samples: a shuffled batch
    must give every sample what it gives alone, with its gradients."""
    g = randomized_generator()
    hg = HyperModulatedGenerator(g, n_classes=5, head=head, rank=4, embed_dim=16)
    labels = torch.tensor([3, 0, 3, 4, 1, 0, 4])  # class 2 absent, others repeated, unsorted
    z, noise = torch.randn(len(labels), 16), g.make_noise(len(labels))
    batch = hg(z, labels, noise=noise)
    alone = torch.cat([hg(z[i:i + 1], labels[i:i + 1], noise=[n[i:i + 1] for n in noise])
                       for i in range(len(labels))])
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
    assert (batch[0] - batch[1]).abs().max() > 1e-3  # classes differ: the test can tell them apart
    grad_batch = torch.autograd.grad(batch.square().sum(), hg.class_net.embedding.weight)[0]
    grad_alone = torch.autograd.grad(alone.square().sum(), hg.class_net.embedding.weight)[0]
    torch.testing.assert_close(grad_batch, grad_alone, rtol=1e-4, atol=1e-5)
    assert grad_batch[2].abs().max() == 0                     # the absent class gets no gradient


@pytest.mark.parametrize("head", ["dense", "lowrank"])
def test_only_hypernetwork_trains(head):
    g = randomized_generator()
    hg = HyperModulatedGenerator(g, n_classes=3, head=head, rank=4, embed_dim=16)
    before = state_hash(hg.base)
    trainable = {id(p) for p in hg.trainable_parameters()}
    # all parameters: frozen ones must not move
    optimizer = torch.optim.Adam(hg.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        hg(torch.randn(4, 16), torch.randint(0, 3, (4,))).square().mean().backward()
        for p in hg.parameters():
            assert (p.grad is not None) == (id(p) in trainable)
        optimizer.step()
    assert state_hash(hg.base) == before
    assert all(p.grad is not None for p in hg.class_net.parameters())
    assert (count(hg.trainable_parameters())
            == count(hg.class_net.parameters()) + count(hg.modulations.parameters()))


@pytest.mark.parametrize("resolution, channels, embed_dim", [(16, 32, 32), (32, 64, 64)])
def test_lowrank_head_is_small(resolution, channels, embed_dim):
    g = Generator(resolution, z_dim=64, w_dim=64, channels=channels, mapping_layers=4)
    lowrank = HyperModulatedGenerator(g, 10, head="lowrank", rank=8, embed_dim=embed_dim)
    dense = HyperModulatedGenerator(g, 10, head="dense", embed_dim=embed_dim)
    assert count(lowrank.trainable_parameters()) <= 0.25 * count(g.parameters())
    assert count(dense.trainable_parameters()) > 4 * count(g.parameters())


def test_copy_embedding_to_all_classes():
    hg = HyperModulatedGenerator(randomized_generator(), n_classes=4, head="lowrank", rank=2,
                                 embed_dim=8)
    z, noise = torch.randn(4, 16), hg.base.make_noise(4)
    hg.copy_embedding_to_all_classes(src_class=2)
    # 4 copies of one code vs 1 code: the same kernels up to round-off
    out = hg(z, torch.arange(4), noise=noise)
    torch.testing.assert_close(out, hg(z, torch.full((4,), 2), noise=noise), rtol=1e-5, atol=2e-5)
    assert hg.class_spread() == pytest.approx(0.0, abs=1e-6)


def test_class_spread_of_orthogonal_embeddings_is_sqrt2():
    hg = HyperModulatedGenerator(randomized_generator(), n_classes=4, head="lowrank", rank=2,
                                 embed_dim=8)
    with torch.no_grad():
        hg.class_net.embedding.weight.copy_(3.0 * torch.eye(8)[:4])  # 4 orthogonal rows of norm 3
    assert hg.class_spread() == pytest.approx(2 ** 0.5, rel=1e-6)


@pytest.mark.parametrize("head", ["dense", "lowrank"])
def test_self_initialization_fits_base_and_keeps_class_sensitivity(head):
    """With the class network at 0.01x (the official self-alignment), the block L1 falls 5x and a
    10% step of the embedding still moves the image by more than 5% of the distance between two
    samples (at 1x the class path learns to ignore the embedding: 0.03 here, against 0.07-0.09)."""
    torch.manual_seed(0)
    g = Generator(8, z_dim=16, w_dim=16, channels=16, mapping_layers=2)
    hg = HyperModulatedGenerator(g, n_classes=3, head=head, rank=4, embed_dim=16)
    random_heads = embedding_sensitivity(hg)
    losses = self_initialize(hg, steps=200, batch_size=8, lr=1e-2, class_lr_mul=0.01,
                             generator=torch.Generator().manual_seed(0), progress=False)
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert end * 5 <= start, (start, end)
    after = embedding_sensitivity(hg)
    assert after > 0.05 and after > 0.5 * random_heads, (random_heads, after)


def test_embedding_noise_breaks_the_copy_symmetry():
    hg = HyperModulatedGenerator(randomized_generator(), n_classes=4, head="lowrank", rank=2,
                                 embed_dim=8)
    hg.copy_embedding_to_all_classes(0, noise=0.1, generator=torch.Generator().manual_seed(0))
    emb = hg.class_net.embedding.weight
    relative = (emb - emb.mean(0)).norm(dim=1) / emb.norm(dim=1)
    assert ((relative > 0.02) & (relative < 0.3)).all()       # about 0.1 * sqrt(3/4) each


# --------------------------------------------------------------------------------- class separation

def test_separation_ratio_known_answers():
    torch.manual_seed(0)
    same = torch.randn(1, 50, 8).expand(4, -1, -1)              # every class the same function of z
    assert separation_ratio(same) == pytest.approx(0, abs=1e-12)
    unrelated = torch.randn(4, 4000, 8)                         # a class change is a new z
    assert separation_ratio(unrelated) == pytest.approx(1, abs=0.05)
    # class decides, z hardly: class offsets (4, 1, 1) + small noise (C, n, D) = (4, 50, 8)
    apart = 10 * torch.arange(4.0).view(4, 1, 1) + 0.1 * torch.randn(4, 50, 8)
    assert separation_ratio(apart) > 1000


def test_class_separation_of_a_generator():
    """Zero class embeddings: every class draws the same image for a z (separation 0 exactly)."""
    cg = ConditionalGenerator(randomized_generator(), n_classes=3)
    assert class_separation(cg, 3, n=16, seed=0)["pixels"] == 0
    with torch.no_grad():
        cg.class_embed.weight.normal_(0, 3.0)
    assert class_separation(cg, 3, n=16, seed=0)["pixels"] > 0.05


def test_memorization_known_answers():
    """Copies of the training images: NN ratio ~0, every sample nearer than 95% of the test images;
    fresh draws from the data distribution: ratio ~1 and ~5% of the samples that near."""
    torch.manual_seed(0)
    train, test = torch.randn(10, 8), torch.randn(1000, 8)
    copies = train[torch.randint(10, (400,))] + 1e-3 * torch.randn(400, 8)
    m = memorization(copies, test, train)
    assert m["nn_ratio"] < 0.01 and m["copy_share"] == 1
    m = memorization(torch.randn(4000, 8), test, train)
    assert (m["nn_ratio"] == pytest.approx(1, abs=0.1)
            and m["copy_share"] == pytest.approx(0.05, abs=0.02))


# ------------------------------------------------------------------------------------ discriminator

@pytest.mark.parametrize("arch", ["plain", "resnet"])
def test_discriminator_shapes_and_labels_required(arch):
    d = Discriminator(16, channels=16, arch=arch)
    logits, feats = d(torch.randn(6, 3, 16, 16), return_features=True)
    assert logits.shape == (6,) and feats.shape == (6, 16)
    with pytest.raises(ValueError):
        d(torch.randn(2, 3, 16, 16), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        Discriminator(16, channels=16, n_classes=3)(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="arch"):
        Discriminator(16, channels=16, arch="vgg")


def test_plain_discriminator_widths_per_resolution():
    """Stride-2 convs read the image directly: widths ch[8], ch[4] at 8x8 and 4x4, ch[16] unused."""
    d = Discriminator(16, channels=[32, 8, 999])              # from 4x4 up
    assert [tuple(c.weight.shape[:2]) for c in d.trunk.convs] == [(8, 3), (32, 8)]
    assert d.fc.in_features == (32 + 1) * 4 * 4               # + the minibatch-stddev channel


def test_multihead_selects_label_logit():
    torch.manual_seed(0)
    d = Discriminator(16, channels=16, n_classes=4)
    x, labels = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    all_logits = d.head(d.features(x))  # (8, 4)
    assert torch.allclose(d(x, labels), all_logits[torch.arange(8), labels])
    assert not torch.allclose(all_logits[:, 0], all_logits[:, 1])


@pytest.mark.parametrize("arch", ["plain", "resnet"])
@pytest.mark.parametrize("cond", ["multihead", "projection"])
def test_conditional_from_unconditional_copy_keeps_logits(cond, arch):
    torch.manual_seed(0)
    d = Discriminator(16, channels=16, arch=arch)
    with torch.no_grad():
        d.head.bias.fill_(0.3)
    dc = conditional_from_unconditional(d, 5, cond=cond, init="copy")
    x = torch.randn(4, 3, 16, 16)
    ref = d(x)
    for c in range(5):
        assert torch.allclose(dc(x, torch.full((4,), c)), ref, atol=1e-6)
    assert next(dc.trunk.parameters()) is not next(d.trunk.parameters())  # a copy, not shared
    class_params = dc.head.parameters() if cond == "multihead" else dc.embed.parameters()
    assert ({id(p) for p in dc.class_parameters()} == {id(p) for p in class_params}
            and d.class_parameters() == [])


@pytest.mark.parametrize("cond", ["multihead", "projection"])
def test_official_init_gives_every_class_its_own_logit(cond):
    """init="random" (the official strict=False load): the pretrained trunk, fresh per-class
    heads."""
    torch.manual_seed(0)
    d = Discriminator(16, channels=16)
    dc = conditional_from_unconditional(d, 5, cond=cond)
    x = torch.randn(8, 3, 16, 16)
    assert torch.equal(dc.features(x), d.features(x))
    logits = torch.stack([dc(x, torch.full((8,), c)) for c in range(5)])     # (class, sample)
    assert (logits.std(dim=0) > 1e-2).all()  # classes disagree on every image


def test_minibatch_stddev_groups():
    x = torch.arange(16.0).view(4, 1, 2, 2) ** 2   # (B, C, H, W): 4 samples, 1 channel, 2x2
    y = minibatch_stddev(x, group_size=2)          # groups {0, 2} and {1, 3}
    assert y.shape == (4, 2, 2, 2) and torch.equal(y[:, :1], x)
    for b in range(4):
        pair = x[[b % 2, b % 2 + 2]]
        expected = (pair.var(0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[b, 1], expected.expand(2, 2))
    # gcd(3, 4) = 1
    assert minibatch_stddev(torch.randn(3, 5, 4, 4), group_size=4).shape == (3, 6, 4, 4)


# ------------------------------------------------------------------------------------------ augment

def test_diff_augment_deterministic_differentiable_shape():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(3))
    b = diff_augment(x, generator=torch.Generator().manual_seed(3))
    c = diff_augment(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, policy=()), x)
    with pytest.raises(ValueError):
        diff_augment(x, policy=("color", "flip"))


def test_translation_and_cutout_geometry():
    x = torch.ones(8, 3, 16, 16)
    cut = diff_augment(x, policy=("cutout",), generator=torch.Generator().manual_seed(0))
    zeros = (cut == 0).all(dim=1).flatten(1).sum(1)             # zeroed pixels per sample
    assert (zeros > 0).all() and (zeros <= 64).all()              # at most an 8x8 square
    moved = diff_augment(x, policy=("translation",), generator=torch.Generator().manual_seed(0))
    assert ((moved == 0) | (moved == 1)).all()                    # zeros come only from padding
    # zeroed pixels per sample, (B, H, W) -> (B,): a shift of at most 2 rows and 2 columns
    assert (moved == 0).all(dim=1).flatten(1).sum(1).max() <= 16 * 16 - 14 * 14
