"""core/training.py: the EMA's closed form, and the fused optimizer update against PyTorch's
per-tensor one."""
import copy

import pytest
import torch
import torch.nn as nn

from core.training import EMA, FUSED


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4))


def test_ema_follows_its_closed_form_with_the_decay_warm_up():
    net = small_net()
    ema = EMA(net, decay=0.999)
    start = [p.detach().clone() for p in net.parameters()]
    targets = []
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        targets.append([p.detach().clone() for p in net.parameters()])
        ema.update(net)
    expected = start
    for step, target in enumerate(targets):
        decay = min(0.999, (1 + step) / (10 + step))   # 0.1, 2/11, 3/12: the warm-up, not 0.999
        expected = [decay * e + (1 - decay) * t for e, t in zip(expected, target)]
    for got, want in zip(ema.model.parameters(), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("make", [
    lambda params, **kw: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, **kw),
    lambda params, **kw: torch.optim.Adam(params, lr=1e-2, betas=(0.0, 0.99), **kw),
    lambda params, **kw: torch.optim.SGD(params, lr=1e-2, momentum=0.9, nesterov=True,
                                         weight_decay=1e-4, **kw),
])
def test_the_fused_optimizers_make_the_per_tensor_update_to_round_off(make):
    nets = [small_net(), None]
    nets[1] = copy.deepcopy(nets[0])
    opts = [make(nets[0].parameters(), foreach=False), make(nets[1].parameters(), **FUSED)]
    x, y = torch.randn(16, 3, 8, 8), torch.randint(4, (16,))
    for _ in range(20):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5, foreach=opt is opts[1])
            opt.step()
    moved = sum((a - b).abs().sum() for a, b in zip(nets[0].parameters(), small_net().parameters()))
    assert moved > 1.0                                  # the updates did something
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
