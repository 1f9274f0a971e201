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
    assert path == tmp_path / "smoke" / "99_test" / "loss.png" and path.stat().st_size > 1000
    fig = plot_bars(["code", "math"], {"paper": [50, 30], "ours": [1, 2]}, profile, xlabel="category",
                    ylabel="score (0-100)", title="t")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["paper", "ours"]
    plt.close("all")
