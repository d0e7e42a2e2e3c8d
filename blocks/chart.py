"""The DSO trend chart of the manager digest, as PNG bytes (uploaded by the caller).

The one module that uses matplotlib, imported inside the function so `import blocks`
stays light. It draws on a `Figure` with the Agg canvas, never through pyplot, so there
is no global figure state, no display and no file: the PNG is built in memory.
"""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from io import BytesIO

WIDTH_PX, HEIGHT_PX, DPI = 900, 400, 100
_LINE = "#1d6fb8"
_LATEST = "#d9480f"


def render_dso_chart(points: list[tuple[date, Decimal | None]], *, title: str) -> bytes:
    """A 900x400 PNG: DSO in days per date, gaps where it is unknown, the latest value
    marked and labelled. Values are plotted as floats: a picture, not money."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
    from matplotlib.figure import Figure

    ordered = sorted(points, key=lambda p: p[0])
    # Dates as matplotlib day numbers (its date helpers carry no annotations).
    raw = date2num([d for d, _ in ordered]) if ordered else []  # type: ignore[no-untyped-call]
    days = [float(x) for x in raw]
    values = [float(v) if v is not None else math.nan for _, v in ordered]
    known = [(day, x, v) for (day, _), x, v in zip(ordered, days, values, strict=True)
             if not math.isnan(v)]

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, loc="left", fontsize=13, fontweight="bold")
    ax.set_ylabel("DSO (days)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)

    if not known:
        ax.text(0.5, 0.5, "No DSO data yet", transform=ax.transAxes, ha="center",
                va="center", fontsize=12, color="#666666")
        ax.set_yticks([])
        ax.set_xticks([])
    else:
        ax.plot(days, values, color=_LINE, linewidth=2.2)
        if len(known) == 1 or len(days) <= 40:
            ax.plot(days, values, "o", color=_LINE, markersize=3)
        last_date, last_x, last_value = known[-1]
        ax.plot([last_x], [last_value], "o", color=_LATEST, markersize=9, zorder=5)
        # The label sits right of the latest point, where no line can run under it.
        ax.annotate(f"{last_value:.1f} days\n{last_date.day} {last_date:%b}",
                    (last_x, last_value), xytext=(10, 0), textcoords="offset points",
                    ha="left", va="center", fontsize=11, fontweight="bold", color=_LATEST)
        top = max(v for _, _, v in known)
        ax.set_ylim(0, top * 1.2 if top > 0 else 1)
        locator = AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        # "14 May" for a few months; "May 2026" when the points span a year or more.
        long_range = (ordered[-1][0] - ordered[0][0]).days >= 365
        formatter = DateFormatter(  # type: ignore[no-untyped-call]
            "%b %Y" if long_range else "%d %b")
        ax.xaxis.set_major_formatter(formatter)
        width = max(days[-1] - days[0], 6.0)  # a lone point still gets a week of axis
        ax.set_xlim(days[-1] - width * 1.02, days[-1] + width * 0.14)
    fig.tight_layout()
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
