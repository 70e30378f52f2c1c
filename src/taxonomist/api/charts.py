"""Small inline-SVG charts for the dashboard (no script, no external file)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "line_chart"]


def bar_chart(pairs: Sequence[tuple[str, float]], *, title: str, width: int = 460, bar: int = 18,
              fmt: str = "{:,.0f}", color: str = "#1f77b4") -> str:
    """Horizontal bars, one per (label, value); the value is written at the bar's end."""
    if not pairs:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40" role="img"><title>{escape(title)}</title><text x="4" y="24">{escape(title)}: no data</text></svg>'
    label_w, gap, top = 150, 6, 26
    top_v = max(v for _, v in pairs) or 1.0
    plot = width - label_w - 70
    height = top + len(pairs) * (bar + gap) + 4
    rows = [f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(pairs):
        y = top + i * (bar + gap)
        w = max(1.0, plot * value / top_v)
        rows.append(f'<text x="{label_w - 6}" y="{y + bar - 5}" text-anchor="end">{escape(str(label)[:24])}</text>'
                    f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" fill="{color}"/>'
                    f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 5}">{escape(fmt.format(value))}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="12" role="img">'
            f'<title>{escape(title)}</title>{"".join(rows)}</svg>')


def line_chart(labels: Sequence[str], values: Sequence[float], *, title: str, lo: float = 0.0, hi: float = 1.0,
               width: int = 460, height: int = 160, fmt: str = "{:.0%}", color: str = "#2ca02c") -> str:
    """One series over labelled points (months), with the first and last value written."""
    if not values:
        return bar_chart([], title=title, width=width)
    left, right, top, bottom = 40, 12, 26, 28
    pw, ph = width - left - right, height - top - bottom
    span = (hi - lo) or 1.0
    n = len(values)
    xs = [left + (pw * i / (n - 1) if n > 1 else pw / 2) for i in range(n)]
    ys = [top + ph * (1 - (min(max(v, lo), hi) - lo) / span) for v in values]
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    parts = [f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{escape(fmt.format(hi))}</text>',
             f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">{escape(fmt.format(lo))}</text>',
             f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>']
    for x, y, v in zip(xs, ys, values):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{escape(fmt.format(v))}</title></circle>')
    parts.append(f'<text x="{xs[0]:.1f}" y="{height - 8}" text-anchor="start">{escape(labels[0])}</text>')
    if n > 1:
        parts.append(f'<text x="{xs[-1]:.1f}" y="{height - 8}" text-anchor="end">{escape(labels[-1])}</text>')
    parts.append(f'<text x="{xs[-1]:.1f}" y="{ys[-1] - 6:.1f}" text-anchor="end">{escape(fmt.format(values[-1]))}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="12" role="img">'
            f'<title>{escape(title)}</title>{"".join(parts)}</svg>')
