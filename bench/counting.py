"""Counting what a step of the project's code does, on the CPU: FLOPs (torch.utils.flop_counter's
formulas: matmuls, convolutions, attention; forward, backward and R1's double backward; 2 FLOPs per
multiply-add), the bytes of tensors autograd saves for backward, and the aten ops dispatched (the
launch floor of eager execution). Used by bench/gpu_estimate.py (what a preset costs on a GPU) and
bench/roofline.py (how close each hot loop comes to this CPU's peak)."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class Counter(TorchDispatchMode):
    """FLOPs (flop_registry's formulas, applied as FlopCounterMode does; its module tracker rejects
    the parameter views that no_grad code makes, e.g. the GAN's const.expand) and ops
    (views excluded)."""

    def __init__(self):
        super().__init__()
        self.flops = self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # a composite op: count what it decomposes into
        if func._overloadpacket not in flop_registry:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        self.ops += not func.is_view
        if func._overloadpacket is torch.ops.aten.convolution_backward and args[9] > 1:
            self.flops += grouped_conv_backward_flops(*args)
        elif func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out


def grouped_conv_backward_flops(grad_out, x, weight, _bias, stride, padding, dilation, transposed,
                                output_padding, groups, output_mask) -> int:
    """A grouped convolution's backward: each of its gradients (input, weight) costs what the
    forward does. torch's formula ignores groups and counts it `groups` times over
    (hyper-modulation's per-sample kernels, a group per sample, read as ~30x their cost)."""
    forward = flop_registry[torch.ops.aten.convolution](x, weight, None, stride, padding, dilation,
                                                        transposed, output_padding, groups,
                                                        out_val=grad_out)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count(step, params) -> dict:
    """FLOPs, bytes saved for backward (storages of `params` excluded) and ops of one call of
    step()."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    saved, alive = {}, []  # alive: no saved storage is freed and its address reused

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            saved[s.data_ptr()] = s.nbytes()
            alive.append(t)
        return t
    with Counter() as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return {"flops": counter.flops, "saved_bytes": sum(saved.values()), "ops": counter.ops}


def at_batch(make, b: int, B: int) -> dict:
    """count() of make(b) and make(2b) (each returns (step, params)), extrapolated linearly to batch
    B."""
    small, large = (count(*make(n)) for n in (b, 2 * b))
    grow = lambda key: small[key] + (large[key] - small[key]) * (B - b) / b
    return {"flops": grow("flops"), "saved_bytes": grow("saved_bytes"), "ops": large["ops"],
            "batch": B, "counted_at_batch": [b, 2 * b]}
