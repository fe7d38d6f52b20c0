"""Executable description of Pillow's 8-bit bicubic resize (libImaging/Resample.c).

CLIPImageProcessor (slow, PIL backend) resizes uint8 RGB images with
`PIL.Image.resize((w, h), resample=BICUBIC)`; this is what that does, written out so the Rust
port has something exact to follow. `make_clip_fixture.py` asserts that it reproduces Pillow
bit for bit on every fixture image.

  * separable, two passes, each rounding and clipping to uint8. Horizontal first, unless the
    height shrinks by more than twice as many pixels as the width:
    (in_h - out_h) > 0 and (in_h - out_h) > 2 * (in_w - out_w)  ->  vertical first
    (Pillow >= 11.x; older Pillow always went horizontal first). A pass whose size does not
    change is skipped (for an unchanged axis PIL copies);
  * per output index i: scale = in/out, filterscale = max(scale, 1) (antialiasing when shrinking),
    support = 2 * filterscale, center = (i + 0.5) * scale,
    xmin = max(int(center - support + 0.5), 0), xmax = min(int(center + support + 0.5), in)
    (C casts truncate toward zero), weights w_j = cubic((j - center + 0.5) / filterscale) for
    j in [xmin, xmax), cubic with a = -0.5, normalised to sum 1 in double precision;
  * weights to fixed point with 22 fractional bits: int(w * 2^22 + 0.5) for w >= 0 and
    int(w * 2^22 - 0.5) for w < 0 (truncating casts);
  * accumulate sum(pixel * weight) in 32-bit ints starting from 2^21, then >> 22 (arithmetic)
    and clip to 0..255.
"""

from __future__ import annotations

import numpy as np

PRECISION_BITS = 32 - 8 - 2


def _cubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
        np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )


def _coeffs(in_size: int, out_size: int):
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    rows = []
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        j = np.arange(xmin, xmax, dtype=np.float64)
        w = _cubic((j - center + 0.5) / filterscale)
        s = w.sum()
        if s != 0.0:
            w = w / s
        k = np.where(w < 0, (w * (1 << PRECISION_BITS) - 0.5), (w * (1 << PRECISION_BITS) + 0.5))
        rows.append((xmin, np.trunc(k).astype(np.int64)))
    return rows


def _pass(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Resample uint8 `img` (H, W, C) along `axis` (1 = horizontal, 0 = vertical)."""
    src = np.moveaxis(img.astype(np.int64), axis, 0)
    out = np.empty((out_size,) + src.shape[1:], dtype=np.uint8)
    for i, (xmin, k) in enumerate(_coeffs(src.shape[0], out_size)):
        acc = np.full(src.shape[1:], 1 << (PRECISION_BITS - 1), dtype=np.int64)
        acc += np.tensordot(k, src[xmin : xmin + len(k)], axes=(0, 0))
        out[i] = np.clip(acc >> PRECISION_BITS, 0, 255)
    return np.moveaxis(out, 0, axis)


def pil_bicubic_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (out_h, out_w, C), matching PIL.Image.resize(..., BICUBIC)."""
    assert img.dtype == np.uint8 and img.ndim == 3
    h, w = img.shape[:2]
    horizontal_first = not ((h - out_h) > 0 and (h - out_h) > (w - out_w) * 2)
    x = img
    if horizontal_first:
        if out_w != w:
            x = _pass(x, out_w, axis=1)
        if out_h != h:
            x = _pass(x, out_h, axis=0)
    else:
        if out_h != h:
            x = _pass(x, out_h, axis=0)
        if out_w != w:
            x = _pass(x, out_w, axis=1)
    return x
