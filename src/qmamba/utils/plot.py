"""Line plots as PNG with PIL alone (no plotting library needed): loss curves, benchmark sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def line_plot(path: str | Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
              xlabel: str, ylabel: str, size: tuple[int, int] = (800, 480)) -> Path:
    """Draw each (xs, ys) series as a line; returns the PNG path."""
    W, H = size
    left, right, top, bottom = 70, 20, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)]
    x0, x1 = (min(p[0] for p in pts), max(p[0] for p in pts)) if pts else (0.0, 1.0)
    y0, y1 = (min(p[1] for p in pts), max(p[1] for p in pts)) if pts else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (W - left - right)
        py = H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)
        return px, py

    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for t in _ticks(y0, y1):
        _, py = to_px(x0, t)
        d.line([left - 4, py, left, py], fill="black")
        d.text((4, py - 6), f"{t:.3g}", fill="black", font=font)
    for t in _ticks(x0, x1):
        px, _ = to_px(t, y0)
        d.line([px, H - bottom, px, H - bottom + 4], fill="black")
        d.text((px - 10, H - bottom + 8), f"{t:.4g}", fill="black", font=font)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        line = [to_px(x, y) for x, y in zip(xs, ys)]
        if len(line) > 1:
            d.line(line, fill=colour, width=2)
        d.text((left + 10, top + 5 + 14 * i), name, fill=colour, font=font)
    d.text((left, 12), title, fill="black", font=font)
    d.text((W // 2 - 20, H - 18), xlabel, fill="black", font=font)
    d.text((4, top - 20), ylabel, fill="black", font=font)
    path = Path(path)
    img.save(path)
    return path


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
