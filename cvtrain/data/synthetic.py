"""Learnable synthetic 32x32 RGB images, the generator behind every synthetic dataset
(the CIFAR-100 stand-in archives and the synthetic birds, which resize them).

Each label (0..99) is a colour family combined with a spatial pattern (stripes,
checkerboard, rings, disc, ...) under random position, phase, frequency, brightness,
illumination and noise. The random draws happen in a fixed order, so a seed always gives
the same bytes.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 32  # CIFAR-100's size; other datasets resize

#: The file every synthetic dataset carries beside its data (an archive member, a file in
#: the dataset's folder), so a loader knows, whatever the path is called, that what it
#: read is synthetic: a run says so and is never compared with the report as a result.
MARKER = "SYNTHETIC"
MARKER_TEXT = ("cvtrain synthetic data: learnable patterns standing in for the real dataset "
               "(cvtrain data synth); results on it test the pipeline, not the model\n")


def is_marker(data: bytes) -> bool:
    """Whether ``data`` (a :data:`MARKER` file's content) is cvtrain's synthetic marker."""
    return data.startswith(MARKER_TEXT.split(":", 1)[0].encode())


def marked(folder) -> bool:
    """Whether a dataset folder holds the synthetic marker."""
    from pathlib import Path

    try:
        return is_marker((Path(folder) / MARKER).read_bytes()[:100])
    except OSError:
        return False

# Foreground colour families (RGB, 0..255). The first five make the 25 default classes.
_COLOURS = np.array(
    [
        (225, 40, 40),  # red
        (40, 205, 60),  # green
        (55, 80, 235),  # blue
        (235, 215, 40),  # yellow
        (215, 50, 205),  # magenta
        (40, 210, 215),  # cyan
        (245, 135, 30),  # orange
        (235, 235, 235),  # white
        (150, 95, 245),  # lavender
        (165, 240, 140),  # mint
    ],
    dtype=np.float32,
)
_PATTERNS = (
    "hstripes", "vstripes", "checker", "rings", "disc",
    "diagonal", "dots", "square", "plus", "cross",
)  # fmt: skip


def _class_style(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fine label -> (pattern index, colour index); all 100 combinations are distinct."""
    block, within = np.divmod(label, 25)
    pattern = within % 5 + 5 * (block % 2)
    colour = within // 5 + 5 * (block // 2)
    return pattern, colour


def _pattern_masks(pattern: int, p: dict[str, np.ndarray]) -> np.ndarray:
    """Foreground coverage in [0, 1], broadcastable to (n, 32, 32), for n images of a pattern."""
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    y = grid[None, :, None]
    x = grid[None, None, :]
    cx = p["cx"][:, None, None]
    cy = p["cy"][:, None, None]
    period = p["period"][:, None, None]
    phase = p["phase"][:, None, None]
    size = p["size"][:, None, None]
    dx, dy = x - cx, y - cy
    two_pi = np.float32(2 * np.pi)

    def waves(u: np.ndarray) -> np.ndarray:
        return np.clip(0.5 + 2.0 * np.sin(two_pi * u / period + phase), 0.0, 1.0)

    def inside(signed: np.ndarray) -> np.ndarray:  # signed distance, > 0 inside
        return np.clip(0.5 + signed, 0.0, 1.0)

    name = _PATTERNS[pattern]  # results may broadcast over rows or columns
    if name == "hstripes":
        return waves(dy)
    if name == "vstripes":
        return waves(dx)
    if name == "checker":
        s = np.sin(two_pi * dx / period + phase) * np.sin(two_pi * dy / period)
        return np.clip(0.5 + 4.0 * s, 0.0, 1.0)
    if name == "rings":
        return waves(np.sqrt(dx * dx + dy * dy))
    if name == "disc":
        return inside(size - np.sqrt(dx * dx + dy * dy))
    if name == "diagonal":
        sign = np.where(p["flip"] > 0.5, 1.0, -1.0).astype(np.float32)[:, None, None]
        return waves((dx + sign * dy) * np.float32(np.sqrt(0.5)))
    if name == "dots":
        gx = np.mod(dx, period) - period / 2
        gy = np.mod(dy, period) - period / 2
        return inside(period * 0.3 - np.sqrt(gx * gx + gy * gy))
    if name == "square":
        return inside(size - np.maximum(np.abs(dx), np.abs(dy)))
    if name == "plus":
        return inside(size / 3.5 - np.minimum(np.abs(dx), np.abs(dy)))
    # cross: two diagonal bars
    half = np.float32(np.sqrt(0.5))
    return inside(size / 3.5 - np.minimum(np.abs(dx - dy), np.abs(dx + dy)) * half)


def _synthesize(labels: np.ndarray, rng: np.random.Generator, chunk: int = 512) -> np.ndarray:
    """Images (N, 32, 32, 3) uint8 for the given fine labels, vectorised in chunks."""
    n = len(labels)
    f32 = np.float32
    pattern, colour = _class_style(labels)
    # Per-image jitter, drawn for every image in a fixed order (deterministic per seed).
    params = {
        "cx": rng.uniform(11.5, 19.5, n).astype(f32),
        "cy": rng.uniform(11.5, 19.5, n).astype(f32),
        "period": rng.uniform(5.5, 9.0, n).astype(f32),
        "phase": rng.uniform(0.0, 2 * np.pi, n).astype(f32),
        "size": rng.uniform(7.0, 10.5, n).astype(f32),
        "flip": rng.uniform(0.0, 1.0, n).astype(f32),
    }
    fg = _COLOURS[colour] + rng.normal(0.0, 12.0, (n, 3)).astype(f32)
    bg = rng.uniform(0.0, 70.0, (n, 3)).astype(f32)
    brightness = rng.uniform(0.75, 1.15, n).astype(f32)
    tilt = rng.uniform(-0.2, 0.2, (n, 2)).astype(f32)  # illumination gradient
    grid = (np.arange(IMAGE_SIZE, dtype=f32) - 15.5) / IMAGE_SIZE

    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        mask = np.empty((m, IMAGE_SIZE, IMAGE_SIZE), dtype=f32)
        pat = pattern[sl]
        for k in np.unique(pat):
            idx = np.nonzero(pat == k)[0]
            sub = {key: val[sl][idx] for key, val in params.items()}
            mask[idx] = _pattern_masks(int(k), sub)
        lo, hi = bg[sl][:, None, None, :], fg[sl][:, None, None, :]
        img = lo + (hi - lo) * mask[..., None]
        light = (
            brightness[sl][:, None, None]
            * (1 + tilt[sl, 0][:, None, None] * grid[None, None, :])
            * (1 + tilt[sl, 1][:, None, None] * grid[None, :, None])
        )
        img *= light[..., None]
        img += f32(14.0) * rng.standard_normal(img.shape, dtype=f32)
        np.clip(np.rint(img, out=img), 0, 255, out=img)
        out[sl] = img.astype(np.uint8)
    return out


def _synthetic_split(
    classes: int, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.repeat(np.arange(classes, dtype=np.int64), per_class))
    return _synthesize(labels, rng), labels


def synthesize_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Learnable synthetic 32x32 RGB images (uint8 NHWC), one per label (0..99); the
    generator behind the synthetic archives, shared with other synthetic datasets."""
    return _synthesize(np.asarray(labels, dtype=np.int64), np.random.default_rng(seed))
