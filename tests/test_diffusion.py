"""The diffusion process against closed forms: schedules, q_sample, DDIM/DDPM, guidance."""
import math

import pytest
import torch

from minidiff.diffusion import Diffusion, classifier_free_guidance


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_abar_is_decreasing_in_unit_interval(schedule):
    d = Diffusion(1000, schedule)
    abar = d.alphas_cumprod
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar[1:] < abar[:-1]).all()
    assert abar[-1] < 0.01  # x_T is (nearly) pure noise


def test_unknown_schedule():
    with pytest.raises(ValueError, match="linear, cosine"):
        Diffusion(10, "sigmoid")


def test_q_sample_mean_and_variance_match_closed_form():
    d = Diffusion(1000, "cosine")
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    t = torch.full((20000,), 300)
    torch.manual_seed(0)
    xt = d.q_sample(x0, t, torch.randn_like(x0))
    abar = d.alphas_cumprod[300].item()
    assert abs(xt.mean().item() - math.sqrt(abar) * 0.7) < 0.02
    assert abs(xt.var().item() - (1 - abar)) < 0.02


def test_predict_x0_inverts_q_sample():
    d = Diffusion(100, "linear")
    x0, noise, t = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 50, 99])
    assert torch.allclose(d.predict_x0(d.q_sample(x0, t, noise), t, noise), x0, atol=1e-4)


def test_ddim_with_eta_zero_is_deterministic():
    d = Diffusion(100)
    eps_fn = lambda x, t: 0.5 * x + 0.01 * t.float().view(-1, 1, 1, 1)  # t (B,) -> (B, 1, 1, 1)
    x_T = torch.randn(2, 3, 8, 8)
    a = d.ddim_sample(eps_fn, x_T, steps=10, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = d.ddim_sample(eps_fn, x_T, steps=10, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = d.ddim_sample(eps_fn, x_T, steps=10, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)


def test_ddim_full_steps_eta_one_is_ddpm():
    """Song et al.: with every timestep and eta = 1, sigma_t^2 is the DDPM posterior variance, and
    the DDIM update is ancestral sampling (Ho et al. Algorithm 2)."""
    d = Diffusion(50, "linear")
    for t in range(1, 50):
        abar_t, abar_prev = d.alphas_cumprod[t], d.alphas_cumprod[t - 1]
        beta_tilde = (1 - abar_prev) / (1 - abar_t) * d.betas[t]
        assert abs(d.ddim_sigma(t, t - 1, 1.0) ** 2 - beta_tilde.item()) < 1e-10
    eps_fn = lambda x, t: torch.tanh(x) * (1 + t.float().view(-1, 1, 1, 1) / 50)  # t: (B, 1, 1, 1)
    x_T = torch.randn(3, 3, 4, 4)
    ddim = d.ddim_sample(eps_fn, x_T, steps=50, eta=1.0, generator=torch.Generator().manual_seed(0))
    ddpm = d.ddpm_sample(eps_fn, x_T, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ddim, ddpm, atol=1e-4)


def test_ddim_recovers_x0_with_an_oracle_eps():
    """If eps_theta returns the true noise of x_T = q_sample(x0, T-1, eps), one DDIM step gives
    x0."""
    d = Diffusion(100, "linear")
    x0 = torch.rand(2, 3, 8, 8) * 1.8 - 0.9
    noise = torch.randn_like(x0)
    x_T = d.q_sample(x0, torch.full((2,), 99), noise)
    out = d.ddim_sample(lambda x, t: noise, x_T, steps=1, eta=0.0)
    assert torch.allclose(out, x0, atol=1e-4)


def test_guidance_scale_one_is_the_conditional_prediction():
    cond, uncond = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(classifier_free_guidance(cond, uncond, 1.0), cond, atol=1e-6)
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), uncond)
    assert torch.allclose(classifier_free_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


def test_loss_is_zero_for_an_oracle_and_positive_otherwise():
    d = Diffusion(100)
    x0 = torch.randn(4, 3, 8, 8)
    # the true noise, recovered from x_t and x0 by inverting Eq. 4
    oracle = lambda x, tt: (x - d._abar(tt, x).sqrt() * x0) / (1 - d._abar(tt, x)).sqrt()
    assert d.loss(oracle, x0, generator=torch.Generator().manual_seed(0)).item() < 1e-8
    assert d.loss(lambda x, tt: torch.zeros_like(x), x0).item() > 0.5
