"""Rotary position embedding (Su et al., RoFormer): rotate query/key pairs by position-dependent
angles so that their dot product depends only on the relative position."""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import ConfigError, InputError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class Rotary(torch.nn.Module):
    """Rotate-half RoPE: channel i pairs with channel i + head_dim / 2."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ConfigError(
                f"rotary=True needs a positive even head_dim (channels are rotated in pairs), "
                f"got {head_dim}: choose heads so that dim / heads is even"
            )
        self.head_dim = head_dim
        self.base = float(base)
        # A plain attribute, not a buffer: it is derived, so it stays out of state_dict and is
        # rebuilt on the device and dtype of whatever input arrives.
        self._cache: tuple[Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"

    def _angles(self, positions: Tensor, dtype: torch.dtype) -> Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        inv_freq = (self.base**-exponents).to(device=positions.device, dtype=dtype)
        angles = positions.to(dtype).unsqueeze(-1) * inv_freq
        return torch.cat([angles, angles], dim=-1)  # both halves of a pair share an angle

    def _cos_sin(self, length: int, device: torch.device, dtype: torch.dtype):
        cache = self._cache
        if (
            cache is None
            or cache[0].shape[0] < length
            or cache[0].device != device
            or cache[0].dtype != dtype
        ):
            # A table built during an inference_mode call must still be usable when training.
            with torch.inference_mode(False):
                angles = self._angles(torch.arange(length, device=device), dtype)
                cache = self._cache = (angles.cos(), angles.sin())
        return cache[0][:length], cache[1][:length]

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate x (B, H, L, head_dim) at positions (L,) or (B, L); default 0 .. L - 1."""
        if x.shape[-1] != self.head_dim:
            raise InputError(f"Rotary built for head_dim={self.head_dim}, got {x.shape[-1]}")
        # Angles of long sequences lose their low bits in half precision.
        compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
        length = x.shape[-2]
        if positions is None:
            cos, sin = self._cos_sin(length, x.device, compute)
        else:
            # Explicit positions may be arbitrary (offsets, packing), so compute their angles
            # directly; same formula as the cached table, so the results agree with slicing it.
            if positions.shape[-1] != length or positions.dim() not in (1, 2):
                raise InputError(
                    f"positions must have shape (L,) or (B, L) with L={length}, "
                    f"got {tuple(positions.shape)}"
                )
            angles = self._angles(positions.to(x.device), compute)
            cos, sin = angles.cos(), angles.sin()
            if positions.dim() == 2:
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        xc = x.to(compute)
        first, second = xc.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return (xc * cos + rotated * sin).to(x.dtype)
