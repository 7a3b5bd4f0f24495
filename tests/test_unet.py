"""UNet and TextToImage: conditioning is wired, every parameter learns, a tiny model overfits."""
import torch

from core.cli import make_config
from core.data import base_classes, load_split, to_float
from minidiff.classifier import DiffusionClassifier
from minidiff.clip import TinyClip
from minidiff.diffusion import Diffusion
from minidiff.text2img import generate
from minidiff.train_clip import build_tokenizer
from minidiff.train_diffusion import build_model
from tests.conftest import tiny_diffusion_overrides


def tiny_model(tmp_path):
    cfg = make_config("quick", tiny_diffusion_overrides(tmp_path))
    tok = build_tokenizer(cfg)
    return cfg, build_model(cfg, TinyClip(len(tok), cfg.clip).text, tok)


def randomise(model):
    """Zero-initialised output layers make a fresh UNet output exactly 0; perturb them to test
    wiring."""
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_prompt_changes_output_and_empty_prompt_works(tmp_path):
    _, model = tiny_model(tmp_path)
    randomise(model)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 60])
    star = model(x, t, model.encode(["a photo of a star"] * 2))
    ring = model(x, t, model.encode(["a photo of a ring"] * 2))
    empty = model(x, t, model.encode(["", ""]))
    assert star.shape == x.shape and torch.isfinite(empty).all()
    assert (star - ring).abs().max() > 1e-4


def test_cross_attention_alone_carries_the_prompt(tmp_path):
    """With the pooled path cut, the prompt still changes the output: through attn2's
    keys/values."""
    _, model = tiny_model(tmp_path)
    randomise(model)
    torch.nn.init.zeros_(model.unet.text_proj.weight)
    torch.nn.init.zeros_(model.unet.text_proj.bias)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 60])
    star = model(x, t, model.encode(["a photo of a star"] * 2))
    ring = model(x, t, model.encode(["a photo of a ring"] * 2))
    assert (star - ring).abs().max() > 1e-4


def test_guidance_one_is_exactly_the_conditional_model(tmp_path):
    _, model = tiny_model(tmp_path)
    randomise(model)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 50])
    prompts = ["a photo of a star", "a drawing of a ring"]
    assert torch.equal(model.eps_fn(prompts, 1.0)(x, t), model(x, t, model.encode(prompts)))
    assert not torch.allclose(model.eps_fn(prompts, 3.0)(x, t), model(x, t, model.encode(prompts)))


def test_unet_batch_bound_changes_nothing_but_speed(tmp_path):
    """run.unet_batch splits sampling and classification into smaller UNet calls (a CPU's cache,
    docs/speed.md, "Earlier speed work"): the same images to the last uint8 level and the same
    classifier errors up to round-off."""
    cfg, model = tiny_model(tmp_path)
    randomise(model)
    diffusion = Diffusion(cfg.diffusion.timesteps, cfg.diffusion.schedule)
    prompts = ["a photo of a star", "a drawing of a ring", "a photo of a heart"] * 3
    sample = lambda unet_batch: generate(model, diffusion, prompts, range(9), 16, steps=3,
                                         guidance=3.0, unet_batch=unet_batch, progress=False).int()
    x0, noise = (torch.rand(5, 3, 16, 16) * 2 - 1,
                 torch.randn(5, cfg.classifier.n_timesteps, 3, 16, 16))
    # (5 images, 3 classes, 4 timesteps)
    errors = lambda unet_batch: DiffusionClassifier(
        model, diffusion, prompts[:3], cfg.classifier, 16, seed=0, unet_batch=unet_batch).errors(
        x0, noise, torch.tensor([[0, 1, 2]] * 5), torch.arange(4))
    calls, forward = [], model.unet.forward
    # records each call's batch
    model.unet.forward = lambda x, *args: calls.append(len(x)) or forward(x, *args)
    bounded_samples, sample_calls = sample(4), max(calls)
    calls.clear()
    bounded_errors, error_calls = errors(7), max(calls)
    del model.unet.forward
    assert sample_calls == 4 and error_calls == 7  # guided: 2 images, 4 passes per call
    assert (bounded_samples - sample(1024)).abs().max() <= 1
    assert torch.allclose(bounded_errors, errors(1024), rtol=1e-5, atol=1e-6)


def test_every_unet_parameter_gets_a_gradient(tmp_path):
    _, model = tiny_model(tmp_path)
    randomise(model)
    loss = Diffusion(100).loss(lambda x, t: model(x, t, model.encode(["a photo of a star"] * 4)),
                               torch.randn(4, 3, 16, 16))
    loss.backward()
    missing = [n for n, p in model.unet.named_parameters()
               if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert all(p.grad is None for p in model.text.parameters())  # the text encoder is frozen


def test_tiny_model_overfits_a_handful_of_images(tmp_path):
    cfg, model = tiny_model(tmp_path)
    data = load_split(cfg.data, "train").only(base_classes(cfg.data)).take(torch.arange(4))
    x0 = to_float(data.x)
    cond = model.encode(["a photo of a star"] * 4)
    diffusion = Diffusion(100)
    opt = torch.optim.Adam(model.unet.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    fixed = lambda: diffusion.loss(lambda x, t: model(x, t, cond), x0,
                                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = fixed().item()
    for _ in range(150):
        loss = diffusion.loss(lambda x, t: model(x, t, cond), x0, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = fixed().item()
    assert after < before / 4, (before, after)
