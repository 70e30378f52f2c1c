"""Hand-written inline SVG charts for the report: no plotting library, no external file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "line_chart", "PALETTE"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False
    step: bool = False
    color: str = ""
    markers: bool = True


@dataclass
class Marker:
    x: float
    label: str


@dataclass
class _Axis:
    lo: float
    hi: float
    log: bool
    size: float
    offset: float
    flip: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(max(v, 1e-12)), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        t = 0.0 if hi == lo else (v - lo) / (hi - lo)
        return self.offset + (self.size * (1 - t) if self.flip else self.size * t)


def _ticks(lo: float, hi: float, log: bool, n: int = 5) -> list[float]:
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        return [10.0**e for e in range(a, b + 1) if lo <= 10.0**e <= hi * 1.0001]
    if hi == lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + step * 1e-6:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float, log: bool) -> str:
    if log or abs(v) >= 1000:
        if abs(v) >= 1e6:
            return f"{v / 1e6:g}M"
        if abs(v) >= 1e3:
            return f"{v / 1e3:g}k"
    return f"{v:g}"


def describe(series: Sequence[Series], x_label: str, y_label: str) -> str:
    """The chart's text alternative: each series from its first to its last point."""
    def num(v: float) -> str:
        return f"{v:.3g}"

    parts = []
    for s in series:
        pts = [(x, y) for x, y in zip(s.xs, s.ys) if y is not None]
        if pts:
            (x0, y0), (x1, y1) = pts[0], pts[-1]
            parts.append(f"{s.label}: {y_label} {num(y0)} at {x_label} {num(x0)} to {num(y1)} at {num(x1)} ({len(pts)} points)")
    return "; ".join(parts) or "no data"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_log: bool = False,
    y_log: bool = False,
    y_range: tuple[float, float] | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    markers: Sequence[Marker] = (),
    diagonal: bool = False,
    width: int = 760,
    height: int = 340,
) -> str:
    """An SVG line chart; `None` in ys breaks a line. Returns the <svg> element as text."""
    left, right, top, bottom = 62, 250, 30, 46
    pw, ph = width - left - right, height - top - bottom
    xs = [x for s in series for x, y in zip(s.xs, s.ys) if y is not None] + [m.x for m in markers]
    ys = [y for s in series for y in s.ys if y is not None]
    if not xs or not ys:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60" role="img"><title>{escape(title)}: no data</title>'
                f'<text x="10" y="30">{escape(title)}: no data</text></svg>')
    x_lo, x_hi = min(xs), max(xs)
    if x_log:
        x_lo, x_hi = max(x_lo, 1e-9), max(x_hi, x_lo * 10)
    elif x_lo == x_hi:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_range:
        y_lo, y_hi = y_range
    else:
        y_lo, y_hi = min(ys), max(ys)
        if y_log:
            y_lo, y_hi = max(y_lo, 1e-9), max(y_hi, y_lo * 10)
        else:
            pad = (y_hi - y_lo) * 0.08 or 0.05
            y_lo, y_hi = y_lo - pad, y_hi + pad
    X = _Axis(x_lo, x_hi, x_log, pw, left)
    Y = _Axis(y_lo, y_hi, y_log, ph, top, flip=True)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title><desc>{escape(describe(series, x_label, y_label))}</desc>",
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for v in _ticks(y_lo, y_hi, y_log):
        y = Y(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v, y_log)}</text>')
    ticks = list(x_ticks) if x_ticks else [(v, _fmt(v, x_log)) for v in _ticks(x_lo, x_hi, x_log)]
    for v, label in ticks:
        x = X(v)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#f3f3f3"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(
        f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2:.1f})">{escape(y_label)}</text>'
    )
    if diagonal:
        parts.append(f'<line x1="{X(x_lo):.1f}" y1="{Y(y_lo):.1f}" x2="{X(x_hi):.1f}" y2="{Y(y_hi):.1f}" stroke="#aaa" stroke-dasharray="3,3"/>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="6,4"' if s.dashed else ""
        segments: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(s.xs, s.ys):
            if y is None or (x_log and x <= 0):
                segments.append([])
                continue
            segments[-1].append((X(x), Y(min(max(y, y_lo), y_hi))))
        for seg in segments:
            if len(seg) >= 2:
                pts = []
                for j, (px, py) in enumerate(seg):
                    if s.step and j:
                        pts.append(f"{px:.1f},{seg[j - 1][1]:.1f}")
                    pts.append(f"{px:.1f},{py:.1f}")
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{" ".join(pts)}"/>')
            if s.markers:
                for px, py in seg:
                    parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.8" fill="{color}"/>')
        ly = top + 12 + i * 16
        parts.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + pw + 34}" y="{ly}">{escape(s.label[:40])}</text>')
    for m in markers:
        x = X(m.x)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#000" stroke-dasharray="2,3"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="{top + 12}" font-size="10">{escape(m.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
