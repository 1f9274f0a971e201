"""One plotting style (with a CJK font), one place figures are saved, and honest bar charts.

Honest means: every bar carries its value (a 0 is labelled, a missing one says "n/a"), our means carry their 95%
interval as an error bar, exam figures draw the chance level, and different measures never share an axis: they
go into separate panels (plot_panels; plot_beside_paper puts the paper's numbers beside ours that way).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager

from .paths import output_dir, project_path

__all__ = ["CJK_FONTS", "DPI", "PALETTE", "PAPER_SOURCE", "find_cjk_font", "setup_style", "profile_label",
           "figure_path", "save_figure", "plot_loss", "plot_loss_curves", "chance_level", "benchmark_axes",
           "series_from_table", "bar_panel", "plot_panels", "plot_bars", "plot_beside_paper", "plot_heatmap",
           "plot_tidy_panels", "interval_table", "INTERVAL_COLUMNS", "interval_columns", "with_units", "captioned"]

# Fonts that cover simplified Chinese, most common first (Colab: Noto via apt; Debian: WenQuanYi; macOS/Windows).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Source Han Sans SC",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS")
# System folders plus .cache/fonts, where `make setup` unpacks a font when it cannot install one as root.
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".local/share/fonts"),
              str(project_path(".cache/fonts")))
DPI = 120
PALETTE = ("#30638e", "#d1495b", "#edae49", "#00798c", "#9aa5b1", "#5c6b7a")
PAPER_SOURCE = "source: Si et al. 2023, numbers as published"
_CROWDED = 16  # bars per panel above which the text over each bar turns upright


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


def figure_path(notebook: str, name: str, profile, root: str | Path | None = None) -> Path:
    """Where a figure goes: beside the run's other outputs, <output_root>/<profile>/<notebook>/figures/<name>.png
    (`root` replaces the profile's output_root), so a run sent elsewhere (a test) writes nothing into the project."""
    return output_dir(str(root or profile.output_root), profile.name, notebook) / "figures" / f"{name}.png"


def save_figure(fig, notebook: str, name: str, profile, root: str | Path | None = None) -> Path:
    """Save at the house dpi to figure_path(...) and return the path."""
    path = figure_path(notebook, name, profile, root)
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


def plot_loss_curves(curves: dict, profile, *, title: str, ylabel: str = "training loss (nats/token)"):
    """Several runs' loss against optimizer step on one axis ({label: [(step, loss), ...]}), told apart by colour
    and line style, the legend beside the plot."""
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    colors = plt.get_cmap("tab10").colors  # ten distinct colours, then the next ten dashed, then dotted
    for i, (label, history) in enumerate(curves.items()):
        steps, losses = zip(*history) if len(history) else ((), ())
        ax.plot(steps, losses, label=label, color=colors[i % 10], linestyle=("-", "--", ":")[i // 10 % 3],
                marker="o" if len(steps) < 3 else None, markersize=3, linewidth=1.3)
    ax.set(xlabel="optimizer step", ylabel=ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.set_title(f"{title}\n{profile_label(profile)}", fontsize=10)
    return fig


def chance_level(n_options: int = 4) -> float:
    """Accuracy (%) of guessing uniformly among n options: 25 for the four options of MMCU/CMMLU/C-Eval."""
    return 100.0 / n_options


def benchmark_axes(panels, n_options: int = 4) -> tuple[dict, dict]:
    """(ylabels, chance) for plot_tidy_panels, by panel name: a Belle(-eval) panel is a score (0-100); any other
    (exam, MMCU) is accuracy (%) with the chance line, ours and the paper's alike."""
    ylabels = {p: "score (0-100)" if "belle" in p.lower() else "accuracy (%)" for p in dict.fromkeys(panels)}
    return ylabels, {p: chance_level(n_options) for p, unit in ylabels.items() if unit.startswith("accuracy")}


def series_from_table(table, label_col: str, labels, *, by: str = "model", names=None):
    """(series, errors) for bar_panel from a tidy table with mean/ci_low/ci_high: one series per value of `by`
    (or `names`), in `labels` order; a label the table lacks is NaN (drawn as "n/a")."""
    names = list(dict.fromkeys(table[by])) if names is None else list(names)
    series, errors = {}, {}
    for name in names:
        rows = table[table[by] == name].set_index(label_col).reindex(list(labels))
        series[name] = rows["mean"].to_numpy(float)
        errors[name] = (rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float))
    return series, errors


def _bar_label(ax, x, top, value, fmt, fontsize, rotation, text=None):
    text = ("n/a" if np.isnan(value) else fmt.format(value)) if text is None else text
    y = 0.0 if np.isnan(top) else top
    ax.annotate(text, (x, y), xytext=(0, 2 if y >= 0 else -2), textcoords="offset points", ha="center",
                va="bottom" if y >= 0 else "top", fontsize=fontsize, rotation=rotation)


def _draw_series(ax, pos, width, values, low_high, *, label, color, fmt, fontsize, rotation, texts=None):
    """One series of bars at `pos`, with its interval when given, each bar labelled with its value (or `texts`)."""
    values, yerr, top = np.asarray(values, dtype=float), None, np.asarray(values, dtype=float)
    if low_high is not None:
        low, high = (np.asarray(e, dtype=float) for e in low_high)
        yerr, top = np.vstack([values - low, high - values]), np.where(values >= 0, high, low)
    ax.bar(pos, np.nan_to_num(values), width=width, label=label, color=color,
           yerr=None if yerr is None else np.nan_to_num(yerr), capsize=2, error_kw={"elinewidth": 0.8})
    for i, (x, t, v) in enumerate(zip(pos, top, values)):
        _bar_label(ax, x, t, v, fmt, fontsize, rotation, None if texts is None else texts[i])


def _style_axis(ax, labels, drawn, *, xlabel, ylabel, title, text_lines: int = 1):
    ax.axhline(0, color="#333333", linewidth=0.6)
    ax.margins(y=0.05 + 0.07 * text_lines)  # room for the labels above the bars: a value, or a note of a few lines
    if np.nanmin(drawn, initial=0) >= 0:  # no negative value: the axis starts at 0 (and an all-zero one ends at 1)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1.0))
    # Slant only labels that would collide: long ones, many of them, on one line each.
    slanted = sum(len(str(t)) for t in labels) > 36 and not any("\n" in str(t) for t in labels)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=30 if slanted else 0, ha="right" if slanted else "center",
                  fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", visible=False)  # vertical grid lines would run through the bars
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=9)


def bar_panel(ax, labels, series: dict, *, ylabel: str, xlabel: str = "", title: str = "", errors=None,
              chance: float | None = None, reference: tuple[float, str] | None = None, colors=None,
              fmt: str = "{:.1f}", texts=None):
    """Grouped bars on `ax`, each labelled with its value ("n/a" when NaN); `errors` {series: (low, high)} draws
    intervals, `chance` a dashed chance line, `reference` (value, label) a dotted line; `colors` {series: colour
    or per-bar colours}; `texts` {series: [text per bar]} replaces the value labels."""
    labels, errors, colors = list(labels), errors or {}, colors or {}
    x, width = np.arange(len(labels)), 0.8 / max(1, len(series))
    crowded = len(labels) * len(series) > _CROWDED  # narrow bars: labels turn upright so they do not overlap
    for i, (name, values) in enumerate(series.items()):
        _draw_series(ax, x + (i - (len(series) - 1) / 2) * width, width, values, errors.get(name), label=name,
                     color=colors.get(name, PALETTE[i % len(PALETTE)]), fmt=fmt, fontsize=6 if crowded else 7,
                     rotation=90 if crowded else 0, texts=(texts or {}).get(name))
    if chance is not None:
        ax.axhline(chance, color="#555555", linestyle="--", linewidth=1, label=f"chance ({chance:g}%)")
    if reference is not None:
        ax.axhline(reference[0], color="#888888", linestyle=":", linewidth=1.2, label=reference[1])
    drawn = np.concatenate([np.ravel(v) for v in series.values()] + [np.ravel(e) for e in errors.values()])
    lines = max((str(t).count("\n") + 1 for bars in (texts or {}).values() for t in bars), default=1)
    _style_axis(ax, labels, drawn, xlabel=xlabel, ylabel=ylabel, title=title, text_lines=1 if crowded else lines)
    return ax


def _figure_legend(fig, extra=()):
    """One legend below the panels: every distinct series, line and extra (colour, label) patch."""
    from matplotlib.patches import Patch

    handles = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    for color, label in extra:
        handles.setdefault(label, Patch(color=color, label=label))
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(4, len(handles)), fontsize=8, frameon=False)


def _label_width(labels) -> float:
    """Inches per group: upright multi-line labels need room for their longest line; slanted ones do not."""
    lines = [line for t in labels for line in str(t).split("\n")]
    upright = any("\n" in str(t) for t in labels)
    return max(0.45, 0.075 * max(map(len, lines), default=0)) if upright else 0.45


def _panel_width(panel: dict) -> float:
    """Inches for one panel: room for its tick labels, and for the text above each bar (a value, or a note such as
    "[-1.1, +1.4]") so that neighbouring bars' texts do not overlap; crowded panels turn that text upright."""
    labels, n_series = panel["labels"], max(1, len(panel["series"]))
    width = _label_width(labels) * len(labels) * n_series ** 0.5 + 1.2
    texts = [str(t) for bars in (panel.get("texts") or {}).values() for t in bars]
    if texts and len(labels) * n_series <= _CROWDED:
        longest = max(len(line) for t in texts for line in t.split("\n"))
        width = max(width, len(labels) * n_series * 0.055 * longest / 0.8 + 1.2)  # ~0.055 in per 7-pt character
    return max(3.2, width)


def plot_panels(panels: list[dict], profile, *, title: str, ncols: int | None = None, sharey: bool = False,
                legend=(), note: str = ""):
    """Side-by-side bar panels, one measure each (keys of bar_panel: labels, series, ylabel, ...), one legend below,
    the title with the profile, an optional footnote; `legend` adds (colour, label) patches."""
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    widths = [_panel_width(p) for p in panels]
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(widths) * ncols, 3.6 * nrows + 0.6), sharey=sharey,
                             squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        bar_panel(ax, **panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\n{profile_label(profile)}", fontsize=10)
    fig.tight_layout()
    _figure_legend(fig, legend)
    if note:  # below the legend, whose height depends on how many entries it wrapped into
        y = 0.0
        if fig.legends:
            fig.canvas.draw()
            y = fig.legends[0].get_window_extent().transformed(fig.transFigure.inverted()).y0
        fig.text(0.5, y - 0.01, note, fontsize=7, ha="center", va="top", wrap=True)
    return fig


def plot_bars(labels, series: dict, profile, *, xlabel: str, ylabel: str, title: str, errors=None,
              chance: float | None = None, fmt: str = "{:.1f}"):
    """One panel of grouped bars (see bar_panel), titled with the profile."""
    return plot_panels([dict(labels=labels, series=series, xlabel=xlabel, ylabel=ylabel, errors=errors,
                             chance=chance, fmt=fmt)], profile, title=title)


def plot_beside_paper(paper: dict, ours: dict, profile, *, title: str, sharey: bool = False, note: str = ""):
    """The paper's numbers (left) and ours with intervals (right) as two panels with their own measures; `sharey`
    only when both are the same measure (e.g. exam accuracy in %)."""
    greys = dict(zip(paper["series"], ("#9aa5b1", "#5c6b7a", "#c9ced6", "#3f4a56")))  # ours keep the colours
    paper = {"title": "paper (Si et al. 2023; no intervals published)", "colors": greys} | paper
    ours = {"title": "ours (error bars: 95% bootstrap CI)"} | ours
    return plot_panels([paper, ours], profile, title=title, sharey=sharey, note=note)


def _interval_cell(row, precision: int) -> str:
    unscored = int(row.get("n_unscored", 0) or 0)
    if np.isnan(row["mean"]):
        return f"n/a ({unscored} unscored)" if unscored else "n/a"
    f = f"{{:.{precision}f}}"
    cell = f"{f.format(row['mean'])} [{f.format(row['ci_low'])}, {f.format(row['ci_high'])}]"
    return cell + (f" (+{unscored} n/a)" if unscored else "")


def interval_table(table, index, columns="model", *, precision: int = 1):
    """A display table of `mean [low, high]` cells from a tidy table (mean, ci_low, ci_high; optional n_unscored:
    items without a reference, shown as "n/a" with their count, never as 0)."""
    cells = table.assign(cell=[_interval_cell(r, precision) for r in table.to_dict("records")])
    return cells.pivot_table(index=index, columns=columns, values="cell", aggfunc="first", sort=False)


# Triples of a mean and its interval as the runner's tables name them, and the column each becomes for display.
INTERVAL_COLUMNS = {"base_mean": ("base_ci_low", "base_ci_high", "untuned [95% CI]"),
                    "mean": ("ci_low", "ci_high", "mean [95% CI]"),
                    "diff": ("diff_low", "diff_high", "difference [95% CI]")}


def interval_columns(table, *, keep=(), precision: int = 1):
    """A display copy of a wide table: each (mean, low, high) triple of INTERVAL_COLUMNS becomes one
    `mean [low, high]` text column (differences signed; "n/a" where not measured); `keep` columns come first."""
    f = f"{{:.{precision}f}}"
    out = table[list(keep)].copy()
    for mean, (low, high, name) in INTERVAL_COLUMNS.items():
        if mean in table:
            sign = "+" if mean == "diff" else ""
            out[name] = [("n/a" if np.isnan(m) else f"{m:{sign}.{precision}f} [{f.format(lo)}, {f.format(hi)}]")
                         for m, lo, hi in zip(table[mean].astype(float), table[low], table[high])]
    return out


def with_units(df, units: dict):
    """A display copy with each named numeric column as text with its unit ({"est_minutes": "{:.1f} min"});
    NaN shows as "n/a". For measurements that are not means of items, so carry no interval."""
    out = df.copy()
    for col, fmt in units.items():
        out[col] = ["n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v) for v in df[col]]
    return out


def captioned(df, profile, title: str, precision: int = 1):
    """A table for display whose caption names what it shows and the profile (smoke: not a result)."""
    return df.style.set_caption(f"{title} · {profile_label(profile)}").format(precision=precision)


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
    tables 6/7; the colour scale (vmin/vmax, default the data's range) is labelled with value_label. Numbers
    published without an interval (the paper's own; no ci columns, or NaN) show the mean alone.
    """
    row_labels, col_labels, cells = _heatmap_grid(table, rows, cols)
    get = lambda r, c, key: float(cells[(r, c)].get(key, "nan")) if (r, c) in cells else float("nan")  # noqa: E731
    means = np.array([[get(r, c, "mean") for c in col_labels] for r in row_labels])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.05 * len(col_labels) + 2.4), max(2.4, 0.75 * len(row_labels) + 1.6)))
    cmap = plt.get_cmap("YlGnBu").with_extremes(bad="#e0e0e0")  # NaN cells: grey, labelled n/a
    image = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    for i, r in enumerate(row_labels):
        for j, c in enumerate(col_labels):
            mean, low, high = means[i, j], get(r, c, "ci_low"), get(r, c, "ci_high")
            interval = "" if np.isnan(low) or np.isnan(high) else f"\n[{low:.1f}, {high:.1f}]"
            text = "n/a" if np.isnan(mean) else f"{mean:.1f}{interval}"
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


def plot_tidy_panels(df, profile, *, panel: str, x: str, hue: str, title: str, xlabel: str, ylabels: dict,
                     note: str | None = None, chance: dict | None = None, ncols: int = 2):
    """plot_panels from a tidy table (mean, and ci_low/ci_high where known): one panel per value of `panel`, each
    with its own y axis (ylabels {panel: unit}), bars of `mean` per `x`, one series per `hue`; `note` names a column
    of text shown above each bar instead of its value (e.g. a gain); `chance` {panel: y} draws chance lines."""
    if "ci_low" not in df or "ci_high" not in df:
        df = df.assign(ci_low=df.get("ci_low", np.nan), ci_high=df.get("ci_high", np.nan))
    hues = list(dict.fromkeys(df[hue]))
    panels = []
    for name, part in df.groupby(panel, sort=False):
        labels = list(dict.fromkeys(part[x]))
        series, errors = series_from_table(part, x, labels, by=hue, names=[h for h in hues if h in set(part[hue])])
        errors = {k: v for k, v in errors.items() if not np.isnan(np.concatenate(v)).all()}
        texts = {h: [_with_note(v, n) for v, n in zip(series[h], _column(part, hue, h, x, labels, note))]
                 for h in series} if note else None
        panels.append(dict(labels=labels, series=series, errors=errors, title=str(name), xlabel=xlabel,
                           ylabel=ylabels.get(name, ""), chance=(chance or {}).get(name), texts=texts))
    return plot_panels(panels, profile, title=title, ncols=max(1, min(ncols, len(panels))))


def _column(part, hue: str, name, x: str, labels, column: str) -> list:
    return part[part[hue] == name].drop_duplicates(x).set_index(x)[column].reindex(labels).fillna("").tolist()


def _with_note(value: float, note: str) -> str:
    text = "n/a" if np.isnan(value) else f"{value:.1f}"
    return f"{text}\n{note}" if note else text
