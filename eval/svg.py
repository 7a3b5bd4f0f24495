"""Grouped bar charts as inline SVG: the report's charts, with no plotting library and no network."""
from __future__ import annotations

import html
import math

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values spanning [low, high] (step 1, 2 or 5 times a power of ten)."""
    if high <= low:
        high = low + 1.0
    span = high - low
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    return [round(start + i * step, 12) for i in range(int(math.ceil((high - start) / step)) + 1)]


def bar_chart(categories: list[str], series: dict[str, list[float]], title: str, y_label: str = "",
              width: int = 720, height: int = 300, value_format: str = "{:.2f}") -> str:
    """Grouped bars: one group per category, one bar per series; negative values go below the zero line."""
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    ticks = nice_ticks(min(0.0, *values) if values else 0.0, max(0.0, *values) if values else 1.0)
    lo, hi = ticks[0], ticks[-1]
    left, right, top, bottom = 56, 12, 28, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    y = lambda v: top + plot_h * (hi - v) / (hi - lo)
    group_w = plot_w / max(1, len(categories))
    bar_w = 0.8 * group_w / max(1, len(series))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    for t in ticks:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#333"/>')
    for g, category in enumerate(categories):
        x0 = left + g * group_w + 0.1 * group_w
        for s, (name, vs) in enumerate(series.items()):
            v = vs[g]
            if v is None or not math.isfinite(v):
                continue
            top_y, bar_h = min(y(v), y(0)), abs(y(v) - y(0))
            out.append(f'<rect x="{x0 + s * bar_w:.1f}" y="{top_y:.1f}" width="{bar_w * 0.92:.1f}" '
                       f'height="{bar_h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                       f'<title>{html.escape(name)} / {html.escape(category)}: {value_format.format(v)}</title></rect>')
        out.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{height - bottom + 14}" text-anchor="end" '
                   f'transform="rotate(-30 {left + (g + 0.5) * group_w:.1f} {height - bottom + 14})">'
                   f'{html.escape(category)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_label)}</text>')
    for s, name in enumerate(series):  # legend along the top right
        lx = width - right - 150 * (len(series) - s)
        out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                   f'<text x="{lx + 14}" y="{height - 5}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
