"""Portable deterministic random numbers for the frozen tensors an adapter file does not store.

TinyLoRA's P tensors are regenerated from a seed, so they must come out identical on every machine,
device and library version. ``torch.randn`` gives no such promise (its CPU kernels differ by tensor
size and across releases), so P is drawn here from a counter-based SplitMix64 stream and a
Box–Muller transform in plain Python: integer arithmetic is exact everywhere, and the float64
``log``/``cos`` differ at most in the last bit, which the cast to float32 removes.
"""

from __future__ import annotations

import math

import torch

_MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One SplitMix64 output for state ``x`` (Steele et al. 2014); a good 64-bit mixer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def stream_key(*parts: int) -> int:
    """Mix a tuple of non-negative integers (seed, module index, …) into one stream key."""
    key = 0x6A09E667F3BCC908  # arbitrary odd constant: key of the empty tuple
    for p in parts:
        if p < 0:
            raise ValueError(f"stream key parts must be non-negative, got {p}")
        key = splitmix64(key ^ (p & _MASK))
    return key


def normal(shape: tuple[int, ...], *parts: int) -> torch.Tensor:
    """i.i.d. N(0, 1) float32 tensor of ``shape``, a pure function of ``parts``."""
    n = math.prod(shape)
    key = stream_key(*parts)
    out = []
    for j in range((n + 1) // 2):
        a = splitmix64((key + 2 * j) & _MASK) >> 11  # 53 random bits
        b = splitmix64((key + 2 * j + 1) & _MASK) >> 11
        u1 = (a + 1) * 2.0**-53  # (0, 1]: log is finite
        u2 = b * 2.0**-53
        rad = math.sqrt(-2.0 * math.log(u1))
        out.append(rad * math.cos(2.0 * math.pi * u2))
        out.append(rad * math.sin(2.0 * math.pi * u2))
    return torch.tensor(out[:n], dtype=torch.float64).to(torch.float32).reshape(shape)


def sign_vector(n: int, salt: int) -> torch.Tensor:
    """A fixed ±1/√n float64 vector of length n from an integer hash (exact on every device).

    Used for sketches of weights (fingerprints), where n can be in the thousands and the
    values only need to be reproducible, not Gaussian.
    """
    idx = torch.arange(n, dtype=torch.int64)
    h = (idx * 0x9E3779B1 + (salt * 0x85EBCA6B + 0x27D4EB2F)) & 0xFFFFFFFF
    h = (h ^ (h >> 15)) * 0x2C1B3C6D & 0xFFFFFFFF
    h = (h ^ (h >> 12)) * 0x297A2D39 & 0xFFFFFFFF
    h = h ^ (h >> 15)
    return ((h & 1) * 2 - 1).to(torch.float64) / math.sqrt(n)


_M32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons) on int64 tensors holding 32-bit values; no product exceeds 2^63."""
    h = h ^ (h >> 16)
    h = (h * 0x21F0AAAD) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x735A2D97) & _M32
    return h ^ (h >> 15)


def key_halves(seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each seed's SplitMix64 stream key, split into 32-bit halves (int64 tensors) for :func:`counter_uniform`."""
    keys = [stream_key(int(s) % (1 << 63)) for s in seeds]
    return (torch.tensor([k >> 32 for k in keys], dtype=torch.int64),
            torch.tensor([k & _M32 for k in keys], dtype=torch.int64))


def counter_uniform(hi: torch.Tensor, lo: torch.Tensor, t: int) -> torch.Tensor:
    """Uniform [0, 1) float64 with 53 random bits for every row's key at counter ``t``.

    Counter-based: row i's number depends only on (its key, t) — not on the batch it sits in, on
    the device, or on any generator state — so one vectorised call serves a whole batch of
    independently seeded samples. Integer ops only, exact on every device.
    """
    if t < 0:
        raise ValueError(f"counter must be non-negative, got {t}")
    a = _mix32(hi ^ _mix32(torch.full_like(hi, (2 * t) & _M32)))
    b = _mix32(lo ^ _mix32(torch.full_like(lo, (2 * t + 1) & _M32)) ^ a)
    return ((a >> 5) * 67108864 + (b >> 6)).to(torch.float64) * 2.0**-53
