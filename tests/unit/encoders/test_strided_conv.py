"""``strided_conv1d`` is ``F.conv1d`` with a hand-written weight gradient: its output and
all three gradients must equal the stock operator's, for every kernel/stride the wav2vec 2.0
extractor uses, with and without bias and with a frozen input or frozen weights."""

import pytest
import torch
import torch.nn.functional as F

from speechssl.encoders.strided_conv import strided_conv1d


def _gradients(conv, x, weight, bias, stride):
    leaves = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    output = conv(x, weight, bias, stride=stride)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    return output, torch.autograd.grad(output, leaves, grad_output)


@pytest.mark.parametrize(
    "kernel, stride, length",
    [(10, 5, 403), (3, 2, 97), (2, 2, 64), (3, 2, 3), (2, 2, 3)],
)
@pytest.mark.parametrize("with_bias", [False, True])
def test_output_and_gradients_equal_conv1d(kernel, stride, length, with_bias):
    torch.manual_seed(0)
    in_channels = 1 if kernel == 10 else 6
    x = torch.randn(3, in_channels, length, requires_grad=True)
    weight = torch.randn(5, in_channels, kernel, requires_grad=True)
    bias = torch.randn(5, requires_grad=True) if with_bias else None
    ours, our_grads = _gradients(strided_conv1d, x, weight, bias, stride)
    theirs, their_grads = _gradients(F.conv1d, x, weight, bias, stride)
    torch.testing.assert_close(ours, theirs)
    assert len(our_grads) == len(their_grads) == (3 if with_bias else 2)
    for our_grad, their_grad in zip(our_grads, their_grads):
        torch.testing.assert_close(our_grad, their_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen", ["input", "weight"])
def test_frozen_operand_gets_no_gradient(frozen):
    x = torch.randn(2, 4, 33, requires_grad=frozen != "input")
    weight = torch.randn(3, 4, 3, requires_grad=frozen != "weight")
    strided_conv1d(x, weight, None, stride=2).square().sum().backward()
    assert (x.grad is None) == (frozen == "input")
    assert (weight.grad is None) == (frozen == "weight")


def test_double_precision_gradcheck():
    x = torch.randn(2, 3, 21, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: strided_conv1d(*a, stride=2), (x, weight, bias))
