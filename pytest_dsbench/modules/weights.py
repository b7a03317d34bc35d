"""Random weights and inputs for the module benchmarks: bf16, seeded, generated in place on the target device."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SEED = 15


def generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with :data:`SEED` (the same inputs in every run)."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(SEED)
    return gen


def random_weight(shape: tuple[int, ...], device: torch.device, fan_in: int | None = None) -> torch.Tensor:
    """A bf16 weight ~ N(0, 1/fan_in), generated in place (no float32 copy of a 15 GB expert stack)."""
    import torch

    out = torch.empty(shape, device=device, dtype=torch.bfloat16)
    return out.normal_(0.0, 1.0 / math.sqrt(fan_in or shape[-1]), generator=generator(device))


def activations(tokens: int, width: int, device: torch.device) -> torch.Tensor:
    """A bf16 input of ``tokens`` rows, N(0, 1)."""
    import torch

    return torch.randn(tokens, width, device=device, dtype=torch.bfloat16, generator=generator(device))
