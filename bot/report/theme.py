"""One palette for the HTML (plotly) and PNG (matplotlib) reports, in a light and a dark variant.

Colours carry meaning and never change between figures: blue is the strategy, grey the
benchmark, red losses and sells, green gains and buys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cycler import cycler

from bot.errors import ConfigError

FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

# Meaning -> colour, shared by both themes.
STRATEGY = "#2563eb"
BENCHMARK = "#94a3b8"
DRAWDOWN = "#e11d48"
BUY = "#16a34a"
SELL = "#dc2626"
GAIN = "#16a34a"
LOSS = "#dc2626"
FAST = "#f59e0b"
SLOW = "#8b5cf6"
LEVEL = "#0ea5e9"
UP = "#16a34a"
DOWN = "#dc2626"
FLAT = "#94a3b8"
SIGNAL_COLOURS = {"long": UP, "short": DOWN, "flat": FLAT}
REGIME_COLOURS = {"momentum": "#2563eb", "mean_reversion": "#f59e0b", "mixed": "#94a3b8",
                  "bull": "#16a34a", "bear": "#dc2626", "sideways": "#94a3b8"}
COLORWAY = [STRATEGY, FAST, SLOW, LEVEL, BENCHMARK, GAIN, LOSS]


@dataclass(frozen=True, slots=True)
class Theme:
    name: str
    page: str      # page background
    card: str      # figure / card background
    text: str
    muted: str
    grid: str
    border: str
    price: str     # the price line (neutral, so markers stand out)
    diverging: list[list[Any]]   # monthly returns: loss .. neutral .. gain
    sequential: str              # attribution heatmaps

    @property
    def dark(self) -> bool:
        return self.name == "dark"


LIGHT = Theme(
    name="light", page="#f4f5f7", card="#ffffff", text="#1f2937", muted="#6b7280", grid="#e5e7eb",
    border="#e2e5ea", price="#334155",
    diverging=[[0.0, LOSS], [0.5, "#f8fafc"], [1.0, GAIN]], sequential="Viridis",
)
DARK = Theme(
    name="dark", page="#0f1115", card="#171a21", text="#e5e7eb", muted="#9ca3af", grid="#2a2f3a",
    border="#262b35", price="#cbd5e1",
    diverging=[[0.0, LOSS], [0.5, "#1f2430"], [1.0, GAIN]], sequential="Viridis",
)
THEMES = {"light": LIGHT, "dark": DARK}


def get_theme(name: str) -> Theme:
    try:
        return THEMES[name]
    except KeyError:
        raise ConfigError(f"unknown theme {name!r}: expected light or dark") from None


def plotly_layout(theme: Theme) -> dict[str, Any]:
    """Layout defaults applied to every plotly figure of the report."""
    return {
        "template": "none",  # every style below is explicit (a named template costs ~0.2 s a figure)
        "paper_bgcolor": theme.card,
        "plot_bgcolor": theme.card,
        "font": {"family": FONT, "color": theme.text, "size": 12},
        "colorway": COLORWAY,
        "margin": {"l": 70, "r": 28, "t": 80, "b": 44},
        "hoverlabel": {"font": {"family": FONT, "size": 12}, "align": "left"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0,
                   "bgcolor": "rgba(0,0,0,0)", "font": {"color": theme.text}},
        # Title on the first line of the top margin, legend on the second: they never overlap.
        "title": {"font": {"size": 15, "color": theme.text}, "x": 0.0, "xref": "paper", "xanchor": "left",
                  "yref": "container", "y": 1.0, "yanchor": "top", "pad": {"t": 12}},
    }


def plotly_axis(theme: Theme) -> dict[str, Any]:
    """Axis style for every x and y axis of every plotly figure."""
    return {"gridcolor": theme.grid, "zerolinecolor": theme.grid, "linecolor": theme.border,
            "tickfont": {"color": theme.muted, "size": 11}, "title": {"font": {"color": theme.muted, "size": 12}},
            "showline": True, "ticks": "outside", "tickcolor": theme.border}


def matplotlib_rc(theme: Theme) -> dict[str, Any]:
    """rcParams for the PNGs: the same colours as the HTML report."""
    return {
        "figure.facecolor": theme.card,
        "axes.facecolor": theme.card,
        "savefig.facecolor": theme.card,
        "axes.edgecolor": theme.border,
        "axes.labelcolor": theme.muted,
        "axes.titlecolor": theme.text,
        "axes.titlesize": 13,
        "axes.titleweight": "bold",
        "axes.titlelocation": "left",
        "axes.grid": True,
        "axes.axisbelow": True,
        "axes.prop_cycle": cycler(color=COLORWAY),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "grid.color": theme.grid,
        "grid.linewidth": 0.8,
        "xtick.color": theme.muted,
        "ytick.color": theme.muted,
        "text.color": theme.text,
        "legend.frameon": False,
        "legend.labelcolor": theme.text,
        "font.size": 11,
        "font.family": "DejaVu Sans",
    }
