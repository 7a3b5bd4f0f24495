"""bf16 autocast and torch.compile on the `cifar10` preset's models at their real widths: the
numerics a GPU run depends on, checked here on the CPU (and on CUDA too where there is one).

bf16. On CUDA the training loops run every forward under core.training.autocast (bf16), the UNet and
the evaluator in channels_last; core.training.autocast does nothing on the CPU (by design: bf16 is
slow there), so on the CPU these tests enter torch.autocast("cpu", dtype=torch.bfloat16) themselves,
also in channels_last, which is where the CPU has bf16 convolution kernels. CPU autocast keeps more
in bf16 than CUDA's (GroupNorm, LayerNorm, instance norm and softmax outputs, which CUDA autocast
computes in float32), so the CPU error should bound the GPU's. Measure: relative L2 error
||y_bf16 - y_fp32|| / ||y_fp32|| of one forward pass. Expected size: bf16 keeps 8 significant bits,
so each matmul or convolution input is rounded with a relative error of at most 2^-9 (0.2%); the
roundings of the ~20-60 layers on a path add roughly in quadrature, and the normalisations rescale
them, which gives about 0.5-3%. Measured on this project's 2-core CPU, seeds 0-4: UNet 0.80-1.16%,
evaluator 0.29-0.48%, generator 1.31-1.74%, hyper-modulated generator (random heads) 2.42-3.39%,
discriminator 0.27-0.70%. TOLERANCE is 3x the largest of those: a real fault (an op that overflows
or cancels in bf16, NaN, a layer fed the wrong dtype) moves the error by far more. Each test also
requires an error above 1e-4, i.e. that bf16 was actually used, and a bf16 output.

torch.compile (`--run.compile` compiles the diffusion UNet). Slow tests, full preset UNet: Dynamo
must capture it as one graph (a graph break would silently cost speed on the GPU) and the compiled
forward and backward must equal eager's; the default backend (inductor, what the training code uses)
must match eager's forward. If this machine cannot compile at all (no C++ compiler, unsupported
platform) they skip, saying why.
"""
import pytest
import torch

from core.cli import make_config
from core.training import autocast
from eval.evalnet import Evaluator
from minidiff.unet import UNet
from minigan.hypermod import HyperModulatedGenerator
from minigan.pretrain import build_discriminator, build_generator

TOLERANCE = {"unet": 0.035, "evaluator": 0.015, "generator": 0.052, "hypermod": 0.10,
             "discriminator": 0.021}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA"))]
CL = torch.channels_last


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx.float() - exact).norm() / exact.norm()).item()


def bf16(device: torch.device):
    """The project's autocast on CUDA; CPU autocast otherwise (module docstring)."""
    return (autocast(device) if device.type == "cuda"
            else torch.autocast("cpu", dtype=torch.bfloat16))


def preset_unet(device, seed: int = 0) -> tuple[UNet, tuple]:
    """The cifar10 preset's UNet (random weights; the zero-initialised last layers of its residual
    branches and output re-drawn, else its output is exactly 0) and a batch of 2 inputs
    (x, t, context, pooled)."""
    cfg = make_config("cifar10")
    torch.manual_seed(seed)
    unet = UNet(cfg.diffusion, cfg.data.resolution, cfg.clip.width, cfg.clip.embed_dim).eval()
    for module in unet.modules():
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            module.reset_parameters()
    r = cfg.data.resolution
    inputs = (torch.randn(2, 3, r, r), torch.tensor([10, 700]),      # x_t (B, 3, H, W), t (B,)
              torch.randn(2, cfg.clip.context_length, cfg.clip.width),  # text states (B, L, width)
              torch.randn(2, cfg.clip.embed_dim))                      # pooled text (B, embed_dim)
    return unet.to(device), tuple(a.to(device) for a in inputs)


def models(name: str, device, seed: int = 0):
    """(module or function, inputs, memory format) of one cifar10-preset network: batch 2 (UNet,
    generators) or 4 (evaluator, and the discriminator, whose minibatch stddev takes groups of
    4)."""
    cfg = make_config("cifar10")
    if name == "unet":
        return *preset_unet(device, seed), CL
    torch.manual_seed(seed)
    if name == "evaluator":
        return (Evaluator(cfg.evalnet, 10).eval().to(device),
                (torch.randn(4, 3, 32, 32, device=device),), CL)
    if name == "discriminator":
        return (build_discriminator(cfg).to(device), (torch.randn(4, 3, 32, 32, device=device),),
                None)
    G = build_generator(cfg).eval().to(device)
    z, noise = torch.randn(2, cfg.gan.z_dim, device=device), G.make_noise(2)
    if name == "generator":
        return (lambda z: G(z, noise=noise)), (z,), None
    # random heads: not the identity
    hyper = HyperModulatedGenerator(G, len(cfg.data.target_classes), head=cfg.transfer.head,
                                    rank=cfg.transfer.rank, embed_dim=cfg.transfer.embed_dim).eval()
    labels = torch.tensor([0, 3], device=device)
    return (lambda z: hyper(z, labels, noise=noise)), (z,), None


def bf16_error(name: str, device, seed: int = 0) -> tuple[float, torch.dtype]:
    """Relative L2 error of the bf16-autocast forward against float32, and the bf16 output's
    dtype."""
    model, inputs, memory_format = models(name, device, seed)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
        inputs = (inputs[0].contiguous(memory_format=memory_format),) + inputs[1:]
    with torch.no_grad():
        exact = model(*inputs)
        with bf16(device):
            approx = model(*inputs)
    assert torch.isfinite(exact).all() and exact.norm() > 0
    return relative_error(approx, exact), approx.dtype


@pytest.fixture
def one_thread():
    """One torch thread: the CPU's bf16 kernels at batch 2 gain nothing from a second, contended
    core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(TOLERANCE))
def test_bf16_autocast_is_close_to_float32(name, device, one_thread):
    """Full width, one forward pass: bf16 within TOLERANCE of float32 (module docstring), and really
    bf16."""
    error, dtype = bf16_error(name, torch.device(device))
    assert dtype == torch.bfloat16
    assert 1e-4 < error < TOLERANCE[name], f"{name}: relative L2 error of bf16 autocast {error:.4f}"


# ------------------------------------------------------------------------------------ torch.compile

def compiles(backend: str, device) -> None:
    """Skip the test, with the reason, when this machine cannot compile a one-line function with
    `backend`."""
    torch._dynamo.reset()
    try:
        torch.compile(lambda x: torch.nn.functional.silu(x) * 2,
                      backend=backend)(torch.randn(8, device=device))
    except Exception as err:  # any failure here is the platform's, not the UNet's
        pytest.skip(f"torch.compile(backend={backend!r}) cannot run on this machine: "
                    f"{type(err).__name__}: {err}")


def forward_backward(unet, inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The UNet's output and the gradients of mean(output^2) with respect to its parameters."""
    unet.zero_grad(set_to_none=True)
    out = unet(*inputs)
    out.pow(2).mean().backward()
    return out.detach(), [p.grad.clone() for p in unet.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_unet_is_one_graph_and_trains_like_eager(device):
    """Dynamo + AOTAutograd (backend aot_eager: the capture and autograd of torch.compile without
    code generation, about a minute on 2 CPU cores): one graph, and forward and gradients equal to
    eager's within 1e-5 (both run the same aten kernels; only decompositions can change the
    round-off)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    device = torch.device(device)
    compiles("aot_eager", device)
    unet, inputs = preset_unet(device)
    counter = CompileCounterWithBackend("aot_eager")
    out, grads = forward_backward(torch.compile(unet, backend=counter), inputs)
    eager_out, eager_grads = forward_backward(unet, inputs)
    assert counter.frame_count == 1, (f"the UNet compiled into {counter.frame_count} graphs: "
                                      "a graph break")
    assert relative_error(out, eager_out) < 1e-5
    flat = lambda tensors: torch.cat([t.flatten() for t in tensors])  # all gradients: (numel,)
    assert relative_error(flat(grads), flat(eager_grads)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_inductor_compiled_unet_matches_eager(device):
    """torch.compile's default backend, as `--run.compile` uses it: the full preset UNet's forward
    within 1e-4 of eager (inductor fuses kernels and reorders float32 sums, e.g. GroupNorm
    statistics: measured 1.8e-6 on the CPU; on CUDA, TF32 convolutions in both leave ~1e-3). Several
    minutes on 2 CPU cores (C++ codegen)."""
    device = torch.device(device)
    compiles("inductor", device)
    unet, inputs = preset_unet(device)
    with torch.no_grad():
        compiled, eager = torch.compile(unet)(*inputs), unet(*inputs)
    assert relative_error(compiled, eager) < (1e-2 if device.type == "cuda" else 1e-4)
