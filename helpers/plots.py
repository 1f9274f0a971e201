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


# ---- appended for the finding notebooks (helpers/arms.py results); kept at the end so merges stay easy ----
__all__ += ["plot_panels"]


def _error_bars(ax, xs, part, means, color="#222222"):
    """Asymmetric error bars from ci_low/ci_high where both are known; returns each bar's top (for notes)."""
    import numpy as np

    tops = means.fillna(0).to_numpy(dtype=float, copy=True)
    if not {"ci_low", "ci_high"} <= set(part.columns):
        return tops
    low, high = part["ci_low"].astype(float).to_numpy(), part["ci_high"].astype(float).to_numpy()
    known = ~(np.isnan(low) | np.isnan(high) | means.isna().to_numpy())
    if known.any():
        m = means.to_numpy(dtype=float)[known]
        err = np.vstack([np.clip(m - low[known], 0, None), np.clip(high[known] - m, 0, None)])
        ax.errorbar(np.asarray(xs)[known], m, yerr=err, fmt="none", ecolor=color, elinewidth=1, capsize=3)
        tops[known] = high[known]
    return tops


def _panel_bars(ax, part, *, x: str, hue: str, hues: list, note: str | None):
    import numpy as np

    labels = list(dict.fromkeys(part[x]))
    pos, width = np.arange(len(labels)), 0.8 / max(1, len(hues))
    palette = ["#9aa5b1", "#d1495b", "#00798c", "#edae49", "#30638e", "#5c6b7a"]
    for i, name in enumerate(hues):
        sub = part[part[hue] == name].drop_duplicates(x).set_index(x).reindex(labels)
        means = sub["mean"].astype(float)
        xs = pos + (i - (len(hues) - 1) / 2) * width
        ax.bar(xs, means.fillna(0), width, label=str(name), color=palette[i % len(palette)])
        tops = _error_bars(ax, xs, sub, means)
        texts = sub[note].fillna("") if note and note in sub else [""] * len(labels)
        for xpos, text, top in zip(xs, texts, tops):
            if text:
                ax.annotate(text, (xpos, top), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points")
    ax.set_xticks(pos, labels, rotation=20, ha="right")


def plot_panels(df, profile, *, panel: str, x: str, hue: str, title: str, xlabel: str, ylabels: dict,
                note: str | None = None, chance: dict | None = None, ncols: int = 2):
    """One bar panel per value of `panel`, each with its own y axis (different measures never share one): bars of
    `mean` per `x`, one colour per `hue`, error bars from ci_low/ci_high where present, optional `note` text above
    bars and dashed chance lines ({panel: y}); the title names the finding and the profile."""
    import math

    panels = list(dict.fromkeys(df[panel]))
    hues = list(dict.fromkeys(df[hue]))
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 3.7 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        _panel_bars(ax, df[df[panel] == name], x=x, hue=hue, hues=hues, note=note)
        if chance and name in chance:
            ax.axhline(chance[name], color="#555555", linestyle="--", linewidth=1, label="chance")
        ax.set_title(str(name), fontsize=9)
        ax.set(xlabel=xlabel, ylabel=ylabels.get(name, ""))
        ax.margins(y=0.15)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    legend = {}  # one entry per label across panels (a chance line drawn in two panels is listed once)
    for ax in axes.flat[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95),
               frameon=False)
    fig.suptitle(f"{title}\n{profile_label(profile)}", fontsize=10)
    fig.tight_layout()
    return fig
