"""One plotting style (with a CJK font) and one place figures are saved."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib import font_manager

from .paths import project_path

__all__ = ["CJK_FONTS", "find_cjk_font", "setup_style", "profile_label", "save_figure", "plot_loss",
           "plot_bars", "captioned"]

# Fonts that cover simplified Chinese, most common first (Colab: Noto via apt; Debian: WenQuanYi; macOS/Windows).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Source Han Sans SC",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS")
# System folders plus .cache/fonts, where `make setup` unpacks a font when it cannot install one as root.
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".local/share/fonts"),
              str(project_path(".cache/fonts")))
DPI = 120


def find_cjk_font() -> str | None:
    """The first installed CJK-capable font family, registering fonts installed after matplotlib started."""
    names = {f.name for f in font_manager.fontManager.ttflist}
    found = next((f for f in CJK_FONTS if f in names), None)
    if found is None:
        for path in font_manager.findSystemFonts(fontpaths=list(_FONT_DIRS)):
            font_manager.fontManager.addfont(path)
        names = {f.name for f in font_manager.fontManager.ttflist}
        found = next((f for f in CJK_FONTS if f in names), None)
    return found


def setup_style() -> str | None:
    """Apply the cookbook's plot style; returns the CJK font in use (warns when there is none)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    font = find_cjk_font()
    if font is None:
        warnings.warn("No CJK font found: Chinese text in figures will show as boxes. Install one, e.g. "
                      "`apt-get install fonts-noto-cjk` (Colab) or `fonts-wqy-microhei` (Debian/Ubuntu).")
    plt.rcParams["font.sans-serif"] = [font, "DejaVu Sans"] if font else ["DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack the Unicode minus glyph
    plt.rcParams["figure.dpi"] = DPI
    return font


def profile_label(profile) -> str:
    """The profile as every figure title shows it, with its caveat (smoke: not a result); a str passes through."""
    if isinstance(profile, str):  # e.g. the paper's own numbers: "source: Si et al. 2023"
        return profile
    return f"profile: {profile.name}" + (f" ({profile.result_note})" if profile.result_note else "")


def save_figure(fig, notebook: str, name: str, profile, root: str | Path = "figures") -> Path:
    """Save to figures/<profile>/<notebook>/<name>.png at the house dpi and return the path."""
    path = project_path(root) / profile.name / notebook / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_loss(loss_history, profile, *, title: str = "训练损失 Training loss"):
    """Loss against optimizer step, titled with the profile."""
    steps, losses = zip(*loss_history) if loss_history else ((), ())
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(steps, losses, marker="o", markersize=3)
    ax.set(xlabel="optimizer step", ylabel="loss (cross-entropy, nats/token)")
    ax.set_title(f"{title}\n{profile_label(profile)}", fontsize=10)
    return fig


def plot_bars(labels, series: dict, profile, *, xlabel: str, ylabel: str, title: str):
    """Grouped bars, one group per label and one bar per series (NaN: not measured); titled with the profile."""
    import numpy as np

    x, width = np.arange(len(labels)), 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.55 * len(labels) * len(series) ** 0.5 + 2), 4.0))
    palette = ["#9aa5b1", "#5c6b7a", "#d1495b", "#edae49", "#00798c", "#30638e"]
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width=width, label=name,
               color=palette[i % len(palette)])
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(f"{title}\n{profile_label(profile)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside: never on a bar
    return fig


def captioned(df, profile, title: str, precision: int = 1):
    """A table for display whose caption names what it shows and the profile (smoke: not a result)."""
    return df.style.set_caption(f"{title} · {profile_label(profile)}").format(precision=precision)


# Appended at the end rather than added to __all__ above, so parallel edits to the top of this module merge cleanly.
__all__ += ["plot_heatmap"]


def _heatmap_grid(table, rows: str, cols: str):
    """Row labels, column labels (first-appearance order) and a {(row, col): record} lookup; one record per cell."""
    dup = table.duplicated([rows, cols])
    if dup.any():
        first = table.loc[dup, [rows, cols]].iloc[0].tolist()
        raise ValueError(f"several rows for {rows}/{cols} {first}: filter the table to one measure "
                         "(one scorer, one exam mode and shot count) first")
    cells = {(r[rows], r[cols]): r for r in table.to_dict("records")}
    return list(dict.fromkeys(table[rows])), list(dict.fromkeys(table[cols])), cells


def plot_heatmap(table, profile, *, title: str, value_label: str, rows: str = "model", cols: str = "category",
                 xlabel: str | None = None, ylabel: str = "arm", vmin=None, vmax=None):
    """Arms x categories (or subjects) heatmap of one measure: each cell shows its mean and [ci_low, ci_high].

    `table` is tidy with columns rows, cols, mean, ci_low, ci_high (e.g. score_tables()["belle"] for one
    scorer, or ["exam"] for one mode and shot count); a missing or NaN cell shows "n/a". Like the paper's
    tables 6/7; the colour scale (vmin/vmax, default the data's range) is labelled with value_label.
    """
    import numpy as np

    row_labels, col_labels, cells = _heatmap_grid(table, rows, cols)
    get = lambda r, c, key: float(cells[(r, c)][key]) if (r, c) in cells else float("nan")  # noqa: E731
    means = np.array([[get(r, c, "mean") for c in col_labels] for r in row_labels])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.05 * len(col_labels) + 2.4), max(2.4, 0.75 * len(row_labels) + 1.6)))
    cmap = plt.get_cmap("YlGnBu").with_extremes(bad="#e0e0e0")  # NaN cells: grey, labelled n/a
    image = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    for i, r in enumerate(row_labels):
        for j, c in enumerate(col_labels):
            mean = means[i, j]
            text = "n/a" if np.isnan(mean) else f"{mean:.1f}\n[{get(r, c, 'ci_low'):.1f}, {get(r, c, 'ci_high'):.1f}]"
            dark = not np.isnan(mean) and image.norm(mean) > 0.55  # white text on the dark end of the scale
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "#222222")
    if "avg" in col_labels:  # the mean over categories is a summary, not one more category: set it apart
        ax.axvline(col_labels.index("avg") - 0.5, color="white", linewidth=3)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.grid(False)
    ax.set(xlabel=xlabel or cols, ylabel=ylabel)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label(value_label)
    ax.set_title(f"{title}\n{profile_label(profile)}", fontsize=10)
    return fig
