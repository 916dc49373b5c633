"""Memory a materialising computation would take, checked before it is attempted: a call that
cannot fit says how much it needs and what to do instead, rather than dying in the allocator."""

from __future__ import annotations

import os

import torch

from attnlab.errors import InputError

# Of the memory free now, the share one computation may claim: the model, the optimiser and
# the autograd graph need the rest.
SHARE = 0.8


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Bytes free on `device` now (CPU: MemAvailable, else physical memory)."""
    if torch.compiler.is_compiling():
        return 1 << 62  # a trace reads no files; the eager call before it was checked
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the allocator decide


def reference_bytes(batch: int, heads: int, n: int, m: int, dtype: torch.dtype) -> int:
    """Peak extra bytes of the reference backend: scores, weights and the mask, each N×M per
    (batch, head), in float32 at least (half precision is computed in float32)."""
    size = max(torch.finfo(dtype).bits // 8, 4) if dtype.is_floating_point else 4
    return 3 * size * batch * heads * n * m


# Below this a computation is not checked: asking the system what is free (a file read on CPU,
# a driver call on CUDA) would cost more than the call itself on the small calls that make most.
UNCHECKED = 64 << 20


def shortfall(need: int, device: torch.device | str) -> str | None:
    """'needs ~X GB, Y GB free' when `need` bytes do not fit on `device`, else None."""
    if need < UNCHECKED:
        return None
    free = available_bytes(device)
    return f"needs ~{gb(need)}, {gb(free)} free" if need > SHARE * free else None


def require_fit(need: int, device: torch.device | str, what: str, advice: str) -> None:
    """InputError unless `need` bytes fit on `device`: '<what> needs ~X GB, Y GB free: <advice>'."""
    short = shortfall(need, device)
    if short is not None:
        raise InputError(f"{what} {short} on {torch.device(device).type}: {advice}")


def gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
