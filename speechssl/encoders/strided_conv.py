"""A strided 1-D convolution whose weight gradient is computed as one matrix product per tap.

The wav2vec 2.0 feature extractor spends about a third of a CPU training step in the
backward pass of its strided convolutions. oneDNN (PyTorch's CPU convolution backend)
computes their weight gradient about 1.5x slower than the same arithmetic written as
``kernel_size`` plain matrix products, one per tap (``benchmarks/strided_conv.py`` on a
2-core AVX2 machine, 512 channels, kernel 3, stride 2, 2 x 4 s of audio, one thread:
0.438 s against 0.284 s). The forward pass and the input gradient stay with oneDNN, which
was as fast as the matmul forms we tried.

Weight gradient of ``y[b, o, t] = sum_{i, k} w[o, i, k] x[b, i, s t + k]``::

    dL/dw[:, :, k] = sum_b g[b] @ x[b, :, k :: s][:, :T']^T      # (C_out, T') @ (T', C_in)

On CUDA, under CPU autocast and under ``torch.compile`` :func:`strided_conv1d` is plain
``F.conv1d``: cuDNN has no such gap and the compiler wants the stock operator.

Example:
    >>> import torch
    >>> x = torch.randn(2, 8, 50, requires_grad=True)
    >>> w = torch.randn(16, 8, 3, requires_grad=True)
    >>> strided_conv1d(x, w, None, stride=2).shape
    torch.Size([2, 16, 24])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["strided_conv1d"]


class _StridedConv1d(torch.autograd.Function):
    """``F.conv1d`` (no padding, no dilation, one group) with a per-tap matmul weight grad."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
        ctx.stride = stride
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return F.conv1d(x, weight, bias, stride=stride)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, weight = ctx.saved_tensors
        stride = ctx.stride
        grad_output = grad_output.contiguous()
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.nn.grad.conv1d_input(x.shape, weight, grad_output, stride=stride)
        if ctx.needs_input_grad[1]:
            out_channels, in_channels, kernel_size = weight.shape
            num_frames = grad_output.shape[2]
            # (B, C_out, T') -> (C_out, B, T') -> (C_out, B * T')
            grad_flat = grad_output.transpose(0, 1).reshape(out_channels, -1)
            taps = []
            for tap in range(kernel_size):
                # the input samples tap `tap` of every output frame read: (B, C_in, T')
                end = tap + stride * (num_frames - 1) + 1
                window = x[:, :, tap:end:stride]
                # (B, C_in, T') -> (C_in, B, T') -> (C_in, B * T')
                window = window.transpose(0, 1).reshape(in_channels, -1)
                taps.append(grad_flat @ window.t())  # (C_out, C_in)
            grad_weight = torch.stack(taps, dim=2)  # (C_out, C_in, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(dim=(0, 2))
        return grad_input, grad_weight, grad_bias, None


def strided_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """``F.conv1d(x, weight, bias, stride=stride)`` with a faster weight gradient on a CPU.

    Args:
        x: (B, C_in, T) input.
        weight: (C_out, C_in, K) kernel.
        bias: (C_out,) or None.
        stride: hop between output frames.

    Returns:
        (B, C_out, T') with ``T' = (T - K) // stride + 1``, equal to ``F.conv1d``'s output;
        gradients equal ``F.conv1d``'s up to float rounding.
    """
    if (
        x.device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch.is_autocast_enabled("cpu")
        or x.shape[2] < weight.shape[2]
        or not torch.is_grad_enabled()
        or not (weight.requires_grad or x.requires_grad)
    ):
        return F.conv1d(x, weight, bias, stride=stride)
    return _StridedConv1d.apply(x, weight, bias, stride)
