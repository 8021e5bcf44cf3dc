"""The report's PNG figures, drawn with PIL alone: a cell's mean score with its 95% interval per row, and a
Pareto plot (accuracy against visual tokens or latency, the non-dominated points joined)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from qmamba.replicate.stats import Interval
from qmamba.utils.plot import COLOURS


def interval_plot(path: Path, rows: list[tuple[str, Interval]], title: str, xlabel: str) -> Path:
    """One row per (label, interval): a dot at the mean and a bar across the interval."""
    rows = [(label, iv) for label, iv in rows if iv.mean is not None]
    left, right, top, row_h = 260, 30, 40, 22
    W, H = 900, top + row_h * max(len(rows), 1) + 50
    img = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(img), ImageFont.load_default()
    lows = [iv.low if iv.low is not None else iv.mean for _, iv in rows] or [0.0]
    highs = [iv.high if iv.high is not None else iv.mean for _, iv in rows] or [1.0]
    x0, x1 = min(lows), max(highs)
    x0, x1 = (x0 - 1, x1 + 1) if x1 - x0 < 1e-9 else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    d.rectangle([left, top - 8, W - right, H - 40], outline="black")
    for i in range(5):
        t = x0 + (x1 - x0) * i / 4
        d.line([px(t), H - 40, px(t), H - 36], fill="black")
        d.text((px(t) - 12, H - 32), f"{t:.3g}", fill="black", font=font)
    for i, (label, iv) in enumerate(rows):
        y, colour = top + row_h * i + row_h // 2 - 8, COLOURS[i % len(COLOURS)]
        d.text((6, y - 6), label[:40], fill="black", font=font)
        if iv.half is not None:
            d.line([px(iv.low), y, px(iv.high), y], fill=colour, width=2)
            d.line([px(iv.low), y - 4, px(iv.low), y + 4], fill=colour, width=2)
            d.line([px(iv.high), y - 4, px(iv.high), y + 4], fill=colour, width=2)
        d.ellipse([px(iv.mean) - 4, y - 4, px(iv.mean) + 4, y + 4], fill=colour)
    d.text((left, 10), title, fill="black", font=font)
    d.text((W // 2 - 40, H - 16), xlabel, fill="black", font=font)
    img.save(path)
    return Path(path)


def pareto_front(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The points no other point beats on both axes (lower x, higher y), sorted by x."""
    front = [p for p in points
             if not any(q[1] <= p[1] and q[2] >= p[2] and (q[1], q[2]) != (p[1], p[2]) for q in points)]
    return sorted(front, key=lambda p: p[1])


def pareto_plot(path: Path, points: list[tuple[str, float, Interval]], title: str, xlabel: str,
                ylabel: str) -> Path:
    """Each (label, x, interval) as a dot with its interval as a vertical bar; the Pareto front joined."""
    points = [(label, x, iv) for label, x, iv in points if iv.mean is not None]
    W, H, left, right, top, bottom = 900, 560, 70, 30, 40, 50
    img = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(img), ImageFont.load_default()
    xs = [x for _, x, _ in points] or [0.0, 1.0]
    ys = [v for _, _, iv in points for v in (iv.low, iv.high, iv.mean) if v is not None] or [0.0, 1.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    x0, x1 = x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0)
    y0, y1 = y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0)
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    py = lambda y: H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)  # noqa: E731
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for i in range(5):
        tx, ty = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        d.text((px(tx) - 12, H - bottom + 8), f"{tx:.3g}", fill="black", font=font)
        d.text((4, py(ty) - 6), f"{ty:.3g}", fill="black", font=font)
    front = pareto_front([(label, x, iv.mean) for label, x, iv in points])
    if len(front) > 1:
        d.line([(px(x), py(y)) for _, x, y in front], fill=(160, 160, 160), width=2)
    for i, (label, x, iv) in enumerate(points):
        colour = COLOURS[i % len(COLOURS)]
        if iv.half is not None:
            d.line([px(x), py(iv.low), px(x), py(iv.high)], fill=colour, width=2)
        d.ellipse([px(x) - 4, py(iv.mean) - 4, px(x) + 4, py(iv.mean) + 4], fill=colour)
        d.text((px(x) + 6, py(iv.mean) - 12), label[:24], fill=colour, font=font)
    d.text((left, 12), title, fill="black", font=font)
    d.text((W // 2 - 40, H - 18), xlabel, fill="black", font=font)
    d.text((4, top - 20), ylabel, fill="black", font=font)
    img.save(path)
    return Path(path)
