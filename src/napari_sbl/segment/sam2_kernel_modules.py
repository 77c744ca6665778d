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


class KernelOrSam2:
    """Mixed into a SAM2 module subclass: runs ``_kernel_forward`` where :meth:`_kernel_applies`, else
    ``_sam2_forward``; ``what`` names the module in the one warning logged when the kernels fail."""

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

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sam2_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
