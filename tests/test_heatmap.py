"""plots.plot_heatmap: arms x categories with every mean's interval written in its cell, titled with the profile."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.eval_sets import BELLE_CATEGORIES  # noqa: E402
from helpers.plots import plot_heatmap, save_figure, setup_style  # noqa: E402
from helpers.profiles import get_profile  # noqa: E402


def tidy_table():
    rng = np.random.default_rng(0)
    rows = []
    for arm in ("自指令 self-instruct", "任务集合 tasks", "mixture"):
        for category in [*BELLE_CATEGORIES, "avg"]:
            mean = float(rng.uniform(10, 60))
            rows.append({"scorer": "rouge_l_chars", "category": category, "n": 6, "mean": mean,
                         "ci_low": mean - 8, "ci_high": mean + 8, "model": arm})
    rows[4] |= {"n": 0, "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}  # a category nobody scored
    return pd.DataFrame(rows)


def test_heatmap_cells_titles_and_file(tmp_path):
    setup_style()
    profile, table = get_profile("smoke"), tidy_table()
    fig = plot_heatmap(table, profile, title="Belle-eval 各类别得分 by category", value_label="score (0-100)")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    first = table.iloc[0]
    assert len(texts) == 3 * 11 and f"{first['mean']:.1f}\n[{first['ci_low']:.1f}, {first['ci_high']:.1f}]" in texts
    assert texts[4] == "n/a" and "profile: smoke" in ax.get_title() and "not a result" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "avg" and ax.get_ylabel() == "arm"
    assert fig.axes[1].get_ylabel() == "score (0-100)"  # the colour bar says what the colours measure
    path = save_figure(fig, "99_test", "heatmap", profile, root=tmp_path)
    assert path.stat().st_size > 10_000
    plt.close(fig)


def test_heatmap_refuses_mixed_measures():
    table = tidy_table()
    mixed = pd.concat([table, table.assign(scorer="judge:x")])
    with pytest.raises(ValueError, match="filter the table to one measure"):
        plot_heatmap(mixed, get_profile("smoke"), title="t", value_label="v")


def test_heatmap_of_published_numbers_shows_the_mean_alone():
    """The paper's tables have no intervals: its cells show the number as published, not "[nan, nan]"."""
    table = pd.DataFrame({"model": ["Alpaca-GPT4", "pCLUE"], "category": "avg", "mean": [58.1, 40.0]})
    fig = plot_heatmap(table, "source: Si et al. 2023", title="Table 6", value_label="score (0-100)")
    assert [t.get_text() for t in fig.axes[0].texts] == ["58.1", "40.0"]
    assert "source: Si et al. 2023" in fig.axes[0].get_title()
    plt.close(fig)
