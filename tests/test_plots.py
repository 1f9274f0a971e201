"""Figures: a CJK font that really renders Chinese, titles with the profile, one path scheme."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from helpers.plots import find_cjk_font, plot_bars, plot_loss, save_figure, setup_style  # noqa: E402
from helpers.profiles import get_profile  # noqa: E402


def test_a_cjk_font_is_installed_and_chinese_renders_without_missing_glyphs(tmp_path):
    font = setup_style()
    assert font, "no CJK font: run `make setup` (it installs fonts-wqy-microhei)"
    assert find_cjk_font() == font
    fig, ax = plt.subplots()
    ax.set_title("训练损失：指令微调")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(tmp_path / "zh.png")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    plt.close(fig)


def test_figures_carry_profile_labels_and_are_saved_per_profile(tmp_path):
    profile = get_profile("smoke")
    fig = plot_loss([(1, 3.0), (2, 2.5)], profile)
    ax = fig.axes[0]
    assert "profile: smoke" in ax.get_title() and "not a result" in ax.get_title()
    assert ax.get_xlabel() and "loss" in ax.get_ylabel()
    path = save_figure(fig, "99_test", "loss", profile, root=tmp_path)
    assert path == tmp_path / "smoke" / "99_test" / "figures" / "loss.png" and path.stat().st_size > 1000
    fig = plot_bars(["code", "math"], {"paper": [50, 30], "ours": [1, 2]}, profile, xlabel="category",
                    ylabel="score (0-100)", title="t")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["paper", "ours"]  # one legend, below the panels
    plt.close("all")


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_figures_follow_the_runs_output_root_not_the_project(tmp_path):
    from helpers.paths import PROJECT_ROOT

    profile = get_profile("smoke", output_root=str(tmp_path))
    path = save_figure(plot_loss([(1, 3.0)], profile), "99_test", "loss", profile)
    assert path == tmp_path / "smoke" / "99_test" / "figures" / "loss.png" and path.exists()
    assert not path.is_relative_to(PROJECT_ROOT / "figures")
    plt.close("all")


def test_bars_carry_values_intervals_zero_and_missing_labels_and_chance():
    from matplotlib.container import ErrorbarContainer

    from helpers.plots import chance_level

    profile = get_profile("smoke")
    fig = plot_bars(["law", "medicine", "avg"], {"base": [0.0, 40.0, float("nan")], "tuned": [10.0, 50.0, 30.0]},
                    profile, xlabel="subject", ylabel="accuracy (%)", title="t", chance=chance_level(4),
                    errors={"base": ([0, 30, float("nan")], [0, 50, float("nan")]),
                            "tuned": ([5, 45, 20], [15, 55, 40])})
    ax = fig.axes[0]
    assert _texts(ax) == ["0.0", "40.0", "n/a", "10.0", "50.0", "30.0"]  # a 0 is labelled, NaN says n/a
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2
    chance = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert chance and chance[0].get_ydata()[0] == 25.0
    plt.close("all")


def test_paper_and_ours_get_separate_axes_with_their_own_measures():
    from helpers.plots import plot_beside_paper

    profile = get_profile("smoke")
    fig = plot_beside_paper(dict(labels=["code"], series={"Bloom": [51.1]}, ylabel="ChatGPT judge (0-100)"),
                            dict(labels=["code"], series={"ours": [3.0]}, errors={"ours": ([1.0], [5.0])},
                                 ylabel="ROUGE-L (0-100)"), profile, title="t")
    left, right = fig.axes
    assert (left.get_ylabel(), right.get_ylabel()) == ("ChatGPT judge (0-100)", "ROUGE-L (0-100)")
    assert "paper" in left.get_title() and "95%" in right.get_title()
    assert "profile: smoke" in fig._suptitle.get_text()
    plt.close("all")


def test_interval_tables_show_mean_and_interval_and_na_with_counts():
    import pandas as pd

    from helpers.plots import interval_table

    tidy = pd.DataFrame({"category": ["code", "brainstorm", "generation"] * 2, "model": ["base"] * 3 + ["tuned"] * 3,
                         "mean": [12.34, float("nan"), 5.0, 20.0, float("nan"), 6.0],
                         "ci_low": [8.0, float("nan"), 1.0, 15.0, float("nan"), 2.0],
                         "ci_high": [16.0, float("nan"), 9.0, 25.0, float("nan"), 9.5],
                         "n_unscored": [0, 4, 2, 0, 4, 2]})
    table = interval_table(tidy, "category")
    assert table.loc["code", "base"] == "12.3 [8.0, 16.0]"
    assert table.loc["brainstorm", "tuned"] == "n/a (4 unscored)"  # never 0
    assert table.loc["generation", "base"] == "5.0 [1.0, 9.0] (+2 n/a)"


def test_series_from_table_keeps_the_label_order_and_marks_missing_labels():
    import numpy as np
    import pandas as pd

    from helpers.plots import series_from_table

    tidy = pd.DataFrame({"subject": ["law", "avg"], "model": ["base", "base"], "mean": [1.0, 2.0],
                         "ci_low": [0.5, 1.5], "ci_high": [1.5, 2.5]})
    series, errors = series_from_table(tidy, "subject", ["physics", "law", "avg"])
    assert np.isnan(series["base"][0]) and list(series["base"][1:]) == [1.0, 2.0]
    assert list(errors["base"][1][1:]) == [1.5, 2.5]


def test_paper_figures_state_the_finding_and_never_mix_measures():
    from helpers.paper_figures import FINDINGS, paper_figure, paper_panels

    for name in FINDINGS:
        fig = paper_figure(name)
        assert fig._suptitle.get_text().startswith("Finding ") and "Si et al. 2023" in fig._suptitle.get_text()
        for ax in fig.axes:
            bars = [p for c in ax.containers for p in c.patches]
            assert len(ax.texts) == len(bars), f"{name}: every bar carries its value"
            if "MMCU accuracy" in ax.get_ylabel():
                assert any(line.get_label().startswith("chance") for line in ax.lines), f"{name}: chance level"
        plt.close(fig)
    ylabels = [p["ylabel"] for p in paper_panels("01_bases")[0]]
    assert sum("gain" in y for y in ylabels) == 2 and len(set(ylabels)) == 3  # absolute and gain apart
    assert any("already instruction-tuned" in label for _, label in paper_panels("01_bases")[1])
    assert [p["title"] for p in paper_panels("03_data_types")[0]] == ["Belle-eval (table 6)", "MMCU (table 7)"]
    assert "-pre-l" in " ".join(paper_panels("05_vocabulary")[0][0]["labels"]) and "100B" in paper_panels(
        "05_vocabulary")[2]


def test_loss_curves_share_one_axis_one_line_each_told_apart():
    from helpers.plots import plot_loss_curves

    curves = {f"method {i}": [(1, 9.0 - i / 10), (2, 8.5 - i / 10)] for i in range(12)}
    fig = plot_loss_curves(curves, get_profile("smoke"), title="loss")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == list(curves)
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(styles) == 12  # the 11th and 12th reuse a colour, dashed
    assert "profile: smoke" in ax.get_title() and "step" in ax.get_xlabel() and "nats" in ax.get_ylabel()
    plt.close(fig)


def test_notes_above_neighbouring_bars_do_not_overlap():
    from helpers.plots import plot_panels

    note = "1.9\n+0.6\n[+0.3, +1.1]"  # a value, a gain and its interval: wider than a bar of a default-size panel
    panel = dict(labels=["llama", "bloom", "qwen2"], series={"untuned": [1.3, 1.3, 1.7], "tuned": [1.9, 1.5, 1.6]},
                 ylabel="score (0-100)", texts={"untuned": [note] * 3, "tuned": [note] * 3})
    fig = plot_panels([panel, panel], get_profile("smoke"), title="t")
    fig.canvas.draw()
    boxes = sorted((t.get_window_extent() for t in fig.axes[0].texts), key=lambda b: b.x0)
    assert len(boxes) == 6 and all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)


def test_notes_of_several_lines_stay_inside_their_panel():
    """A value, a gain and its interval stacked over the tallest bar (with its error bar) end below the frame."""
    from helpers.plots import plot_panels

    note = "1.9\n+0.6\n[+0.3, +1.1]"
    panel = dict(labels=["llama", "bloom", "qwen2"], series={"untuned": [1.3, 1.3, 1.7], "tuned": [1.9, 1.5, 1.6]},
                 errors={"untuned": ([0.2, 0.5, 1.2], [2.4, 2.3, 2.2]), "tuned": ([1.0, 0.7, 1.2], [3.1, 2.3, 2.0])},
                 ylabel="score (0-100)", texts={"tuned": [note] * 3})
    fig = plot_panels([panel, panel], get_profile("smoke"), title="t")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert all(t.get_window_extent().y1 <= ax.get_window_extent().y1 for t in ax.texts)
    plt.close(fig)


def test_benchmark_axes_give_exam_and_mmcu_panels_accuracy_and_the_chance_line():
    from helpers.plots import benchmark_axes

    panels = ["paper · Belle-eval (ChatGPT score)", "paper · MMCU (generated answers)", "ours · belle · rouge_l_chars",
              "ours · exam · generate/0-shot", "ours · exam · generate/0-shot"]
    ylabels, chance = benchmark_axes(panels)
    assert list(ylabels.values()) == ["score (0-100)", "accuracy (%)", "score (0-100)", "accuracy (%)"]
    assert chance == {panels[1]: 25.0, panels[3]: 25.0}
