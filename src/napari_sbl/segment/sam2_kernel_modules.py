"""What every SAM2 module with our kernels inside shares: when the kernels may run, and falling back.

Our modules subclass SAM2's (same parameters, swapped in by class), so a checkpoint loads either way and
SAM2's own forward stays one method call away. The kernels run only for inference under autocast (their
outputs are in the autocast dtype, as the layers after them would cast anyway) on CUDA, or anywhere for
tests on Triton's interpreter. A kernel that does not run here (no compiler for Triton's launcher, an
unsupported GPU) is logged once and SAM2's forward used from then on, so tracking goes on; running out of
memory is not a kernel failure and is raised.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def autocast_inference(x: torch.Tensor, everywhere: bool) -> bool:
    """Whether our kernels may stand in for SAM2's layers on ``x``: under autocast, with nothing requiring
    gradients, on CUDA (or anywhere, for tests)."""
    device = x.device.type
    return ((device == "cuda" or everywhere) and not torch.is_grad_enabled()
            and torch.is_autocast_enabled(device))


def is_exact_gelu(module: object) -> bool:
    """Whether ``module`` is PyTorch's GELU in its exact (erf) form, the one our fused paths stand in for."""
    return type(module) is torch.nn.GELU and module.approximate == "none"


def adopt(module: torch.nn.Module, kind: type, kernel_everywhere: bool) -> None:
    """Make SAM2's ``module`` an instance of ``kind``, our :class:`KernelOrSam2` subclass of its class (same
    parameters and state-dict keys); ``kernel_everywhere`` lets the kernels run off CUDA (tests)."""
    module.__class__ = kind
    module.kernel_everywhere = kernel_everywhere


class KernelOrSam2:
    """Mixed into a SAM2 module subclass, which defines ``_kernel_forward`` and ``_sam2_forward``: runs the
    first where :meth:`_kernel_applies`, else the second; ``what`` names the module in the one warning
    logged when the kernels fail."""

    what = "SAM2 module"
    kernel_everywhere = False
    kernel_failed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_failed or not self._kernel_applies(x):
            return self._sam2_forward(x)
        try:
            return self._kernel_forward(x)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # Triton's compile errors have no common base class; nothing changed yet
            self.kernel_failed = True
            logger.warning("SAM2's own %s is used: our kernels do not run here (%s: %s)", self.what,
                           type(err).__name__, str(err)[:200])
            return self._sam2_forward(x)

    def _kernel_applies(self, x: torch.Tensor) -> bool:
        return autocast_inference(x, self.kernel_everywhere)


def linear_gelu(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``gelu(linear(x))`` in the autocast dtype as one call: on CUDA one cuBLAS call whose epilogue computes
    GELU's tanh form (see the module's text; past ~2 M rows PyTorch splits it into a matmul and a GELU), on
    the CPU (tests) the exact GELU. ``x`` is (..., in_features), ``linear`` has a bias."""
    return _linear_epilogue(linear, x, use_gelu=True)


def linear_relu(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``relu(linear(x))`` in the autocast dtype as one call (a ReLU epilogue: the same numbers, as ReLU
    commutes with rounding). ``x`` is (..., in_features), ``linear`` has a bias."""
    return _linear_epilogue(linear, x, use_gelu=False)


def _linear_epilogue(linear: torch.nn.Linear, x: torch.Tensor, use_gelu: bool) -> torch.Tensor:
    dtype = torch.get_autocast_dtype(x.device.type)
    rows = x.reshape(-1, x.shape[-1]).to(dtype)
    hidden = torch._addmm_activation(linear.bias.to(dtype), rows, linear.weight.to(dtype).t(), use_gelu=use_gelu)
    return hidden.reshape(*x.shape[:-1], hidden.shape[-1])
