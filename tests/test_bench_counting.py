"""bench/counting.py against FLOP counts worked out by hand."""
import torch
import torch.nn.functional as F

from bench.counting import count


def test_matmul_and_convolution_flops_forward_and_backward():
    a, b = torch.randn(8, 16, requires_grad=True), torch.randn(16, 4)
    assert count(lambda: a @ b, [])["flops"] == 2 * 8 * 16 * 4
    x, w = torch.randn(2, 3, 5, 5, requires_grad=True), torch.randn(6, 3, 3, 3, requires_grad=True)
    forward = 2 * 2 * 6 * 3 * 9 * 5 * 5  # 2 per multiply-add: batch, out, in, taps, pixels
    assert count(lambda: F.conv2d(x, w, padding=1), [])["flops"] == forward
    # backward: the input gradient and the weight gradient each cost a forward
    assert count(lambda: F.conv2d(x, w, padding=1).sum().backward(), [])["flops"] == 3 * forward


def test_a_grouped_convolution_costs_what_its_groups_do_separately():
    """One group per sample (hyper-modulation's per-sample kernels): torch's own backward formula
    ignores groups and counts it `groups` times over."""
    B, I, O, r = 4, 3, 5, 6
    x = torch.randn(1, B * I, r, r, requires_grad=True)
    w = torch.randn(B * O, I, 3, 3, requires_grad=True)
    grouped = count(lambda: F.conv2d(x, w, padding=1, groups=B).sum().backward(), [])["flops"]
    # group i is sample i: its I input channels (I, r, r) and its O kernels (O, I, 3, 3)
    xs, ws = x.detach().view(B, I, r, r), w.detach().view(B, O, I, 3, 3)
    separate = sum(count(lambda i=i: F.conv2d(xs[i:i + 1].requires_grad_(),
                                              ws[i].requires_grad_(), padding=1)
                         .sum().backward(), [])["flops"] for i in range(B))
    assert grouped == separate == 3 * 2 * B * O * I * 9 * r * r
