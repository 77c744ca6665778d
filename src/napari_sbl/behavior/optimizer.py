"""What updates a head's weights: AdamW, the warm-up + cosine learning-rate schedule and the weight EMA.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math

from napari_sbl.behavior.profiles import TrainParams


class AdamW:
    """AdamW (Loshchilov & Hutter) with multi-tensor updates, written out because the first use of
    ``torch.optim`` imports ``torch._dynamo`` and with it triton, whose bundled LLVM crashes a process
    that already loaded Mesa's (napari on software OpenGL, e.g. under Xvfb or remote desktops)."""

    def __init__(self, params: list, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.weight_decay, self.betas, self.eps, self.steps = weight_decay, betas, eps, 0
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, lr: float) -> None:
        import torch

        pairs = [(p, m, v) for p, m, v in zip(self.params, self.first, self.second, strict=True) if p.grad is not None]
        if not pairs:
            return
        params, first, second = (list(x) for x in zip(*pairs, strict=True))
        grads = [p.grad for p in params]
        self.steps += 1
        beta1, beta2 = self.betas
        with torch.no_grad():
            torch._foreach_mul_(params, 1.0 - lr * self.weight_decay)
            torch._foreach_lerp_(first, grads, 1.0 - beta1)
            torch._foreach_mul_(second, beta2)
            torch._foreach_addcmul_(second, grads, grads, 1.0 - beta2)
            denominator = torch._foreach_sqrt(second)
            torch._foreach_div_(denominator, math.sqrt(1.0 - beta2**self.steps))
            torch._foreach_add_(denominator, self.eps)
            torch._foreach_addcdiv_(params, first, denominator, -lr / (1.0 - beta1**self.steps))


def cosine_schedule(params: TrainParams, steps_per_epoch: int):
    warmup = max(1, params.warmup_epochs * steps_per_epoch)
    total = max(warmup + 1, params.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    return factor


def ema_update(ema, model, decay: float) -> None:
    """ema ← decay · ema + (1 - decay) · model for floating tensors (one multi-tensor op); others copied."""
    import torch

    pairs = list(zip(ema.state_dict().values(), model.state_dict().values(), strict=True))
    floating = [(e, m) for e, m in pairs if e.dtype.is_floating_point]
    with torch.no_grad():
        if floating:
            torch._foreach_lerp_([e for e, _ in floating], [m.detach() for _, m in floating], 1.0 - decay)
        for e, m in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(m)
