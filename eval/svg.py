"""Grouped bar charts and curves as inline SVG: the report's charts, with no plotting library
and no network."""
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


def header(width: int, height: int, title_x: float, title: str) -> list[str]:
    """The opening <svg> tag and the title."""
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            f'<text x="{title_x}" y="16" text-anchor="middle" font-size="13">'
            f'{html.escape(title)}</text>']


def y_grid(ticks, y, x_from: float, x_to: float) -> list[str]:
    """A light horizontal line and a label at each tick of the y axis (y: value -> pixel)."""
    return [f'<line x1="{x_from}" x2="{x_to}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
            f'<text x="{x_from - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>'
            for t in ticks]


def whisker(value: float, offset: float) -> float:
    """One end of a whisker: value + offset, stopped at 0 for a bar that is not negative (a spread
    drawn below 0 would show a rate or a count going negative)."""
    end = value + offset
    return max(end, 0.0) if value >= 0 else end


def legend_rows(names: list[str], x_from: float, x_to: float) -> list[tuple[str, float, int]]:
    """(name, x, row) of each legend entry: a swatch and its text (about 6.2 px a character), left
    to right, a new row where the next entry would pass x_to."""
    placed, x, row = [], x_from, 0
    for name in names:
        entry = 24 + 6.2 * len(name)
        if x > x_from and x + entry - 10 > x_to:
            x, row = x_from, row + 1
        placed.append((name, x, row))
        x += entry
    return placed


def bar_chart(categories: list[str], series: dict[str, list[float]], title: str, y_label: str = "",
              width: int = 720, height: int = 300, value_format: str = "{:.2f}",
              errors: dict | None = None, floor: list[float] | None = None,
              floor_label: str = "floor") -> str:
    """Grouped bars: one group per category, one bar per series; negative values go below the zero
    line. errors: {series: [half-width of the error bar of each category]} (a spread, drawn as a
    whisker); floor: a reference value per category (e.g. the base model against itself), drawn as a
    dashed line across the group. A bar of exactly 0 is drawn as a thick line on the axis, so that
    it reads as a value, not as a missing bar."""
    errors = errors or {}
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    values += [whisker(v, sign * e) for name, es in errors.items() for v, e in zip(series[name], es)
               if v is not None and e is not None and math.isfinite(v) and math.isfinite(e)
               for sign in (-1, 1)]
    values += [f for f in floor or [] if f is not None and math.isfinite(f)]
    ticks = nice_ticks(min(0.0, *values) if values else 0.0, max(0.0, *values) if values else 1.0)
    lo, hi = ticks[0], ticks[-1]
    group_w = (width - 68) / max(1, len(categories))
    # labels that do not fit: slanted
    rotate = max((len(c) for c in categories), default=0) * 6.5 > group_w
    left, right = 56, 12
    legend = legend_rows(list(series) + ([f"- - {floor_label}"] if floor else []), left,
                         width - right)
    extra = 14 * max((row for _, _, row in legend), default=0)  # legend rows past the first
    height, top = height + extra, 44 + extra
    bottom = 20 + (int(6.5 * max((len(c) for c in categories), default=0) * 0.55)
                   if rotate else 0) + 14
    plot_w, plot_h = width - left - right, height - top - bottom
    y = lambda v: top + plot_h * (hi - v) / (hi - lo)
    bar_w = 0.8 * group_w / max(1, len(series))
    out = header(width, height, width / 2, title) + y_grid(ticks, y, left, width - right)
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
               'stroke="#333"/>')
    for g, category in enumerate(categories):
        x0 = left + g * group_w + 0.1 * group_w
        for s, (name, vs) in enumerate(series.items()):
            v = vs[g]
            if v is None or not math.isfinite(v):
                continue
            # at least 2 px: 0 is a value
            top_y, bar_h = min(y(v), y(0)), max(abs(y(v) - y(0)), 2.0)
            x, w = x0 + s * bar_w, bar_w * 0.92
            note = f"{name} / {category}: {value_format.format(v)}"
            e = (errors.get(name) or [None] * len(categories))[g]
            if e is not None and math.isfinite(e):
                note += f" +- {value_format.format(e)}"
            out.append(f'<rect x="{x:.1f}" y="{top_y - (1 if v == 0 else 0):.1f}" width="{w:.1f}" '
                       f'height="{bar_h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                       f'<title>{html.escape(note)}</title></rect>')
            if e is not None and math.isfinite(e) and e > 0:
                cx = x + w / 2
                low, high = whisker(v, -e), whisker(v, e)
                out.append(f'<path d="M{cx:.1f},{y(low):.1f}V{y(high):.1f}'
                           f'M{cx - 3:.1f},{y(low):.1f}h6M{cx - 3:.1f},{y(high):.1f}h6" '
                           'stroke="#222" fill="none"/>')
        if floor and floor[g] is not None:
            fy = y(floor[g])
            out.append(
                f'<line x1="{x0 - 0.05 * group_w:.1f}" x2="{x0 + 0.85 * group_w:.1f}" '
                f'y1="{fy:.1f}" y2="{fy:.1f}" stroke="#000" stroke-dasharray="4 3" '
                'stroke-width="1.5"><title>'
                f'{html.escape(f"{floor_label} / {category}: {value_format.format(floor[g])}")}'
                '</title></line>')
        cx, ly = left + (g + 0.5) * group_w, height - bottom + 14
        slant = (f' text-anchor="end" transform="rotate(-30 {cx:.1f} {ly})"' if rotate
                 else ' text-anchor="middle"')
        out.append(f'<text x="{cx:.1f}" y="{ly}"{slant}>{html.escape(category)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_label)}</text>')
    for s, (name, lx, row) in enumerate(legend):  # rows under the title
        ly = 24 + 14 * row
        if s < len(series):
            out.append(f'<rect x="{lx:.1f}" y="{ly}" width="10" height="10" '
                       f'fill="{PALETTE[s % len(PALETTE)]}"/>')
        out.append(f'<text x="{lx + 14:.1f}" y="{ly + 9}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def curve_chart(series: dict[str, list[tuple]], title: str, x_label: str, y_label: str,
                width: int = 720, height: int = 360, hline: tuple[float, str] | None = None,
                vline: tuple[float, str] | None = None,
                x_range: tuple[float, float] = (-math.inf, math.inf)) -> str:
    """One line of points per series, each point (x, y, x_spread, y_spread, label) with whiskers on
    both axes, joined in order of x; hline / vline: a dashed reference line (value, name), e.g. the
    floor, or the fidelity that an unregularized run reaches. x_range: the values x can take (a
    rate: 0-100); a whisker stops at its ends."""
    x_end = lambda v: min(max(v, x_range[0]), x_range[1])  # noqa: E731
    points = [p for ps in series.values() for p in ps if p[0] is not None and p[1] is not None]
    xs = [x_end(p[0] + s * (p[2] or 0)) for p in points for s in (-1, 1)] + \
        ([vline[0]] if vline else [])
    ys = [p[1] + s * (p[3] or 0) for p in points for s in (-1, 1)] + ([hline[0]] if hline else [])
    xt, yt = (nice_ticks(min(xs, default=0.0), max(xs, default=1.0)),
              nice_ticks(min(ys, default=0.0), max(ys, default=1.0)))
    left, right, top, bottom = 56, 150, 28, 48
    pw, ph = width - left - right, height - top - bottom
    X = lambda v: left + pw * (v - xt[0]) / (xt[-1] - xt[0])  # noqa: E731
    Y = lambda v: top + ph * (yt[-1] - v) / (yt[-1] - yt[0])  # noqa: E731
    out = header(width, height, left + pw / 2, title) + y_grid(yt, Y, left, left + pw)
    for t in xt:
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{top}" y2="{top + ph}" '
                   'stroke="#eee"/>'
                   f'<text x="{X(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">'
               f'{html.escape(x_label)}</text>'
               f'<text x="12" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + ph / 2})">'
               f'{html.escape(y_label)}</text>')
    if hline:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(hline[0]):.1f}" '
                   f'y2="{Y(hline[0]):.1f}" stroke="#000" '
                   f'stroke-dasharray="4 3"><title>{html.escape(hline[1])}</title></line>')
    if vline:
        out.append(f'<line x1="{X(vline[0]):.1f}" x2="{X(vline[0]):.1f}" y1="{top}" '
                   f'y2="{top + ph}" stroke="#888" '
                   f'stroke-dasharray="2 3"><title>{html.escape(vline[1])}</title></line>')
    for s, (name, ps) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        ps = sorted((p for p in ps if p[0] is not None and p[1] is not None), key=lambda p: p[0])
        if len(ps) > 1:
            out.append(f'<polyline fill="none" stroke="{colour}" points="'
                       + " ".join(f"{X(p[0]):.1f},{Y(p[1]):.1f}" for p in ps) + '"/>')
        for x, y, dx, dy, label in ps:
            if dx:
                out.append(f'<path d="M{X(x_end(x - dx)):.1f},{Y(y):.1f}H{X(x_end(x + dx)):.1f}" '
                           f'stroke="{colour}"/>')
            if dy:
                out.append(f'<path d="M{X(x):.1f},{Y(y - dy):.1f}V{Y(y + dy):.1f}" '
                           f'stroke="{colour}"/>')
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.5" fill="{colour}"><title>'
                       f'{html.escape(f"{name} {label}: ({x:.1f}, {y:.1f})")}</title></circle>')
        out.append(f'<rect x="{width - right + 10}" y="{top + 16 * s}" width="10" height="10" '
                   f'fill="{colour}"/>'
                   f'<text x="{width - right + 24}" y="{top + 16 * s + 9}">'
                   f'{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
