import numpy as np
import pandas as pd
import pytest


from helpers.stats import bootstrap_ci, compare_runs, paired_difference, summarise


def test_ci_contains_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, 30)
    large = rng.uniform(0, 1, 3000)
    m_s, lo_s, hi_s = bootstrap_ci(small)
    m_l, lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= m_s <= hi_s and lo_l <= m_l <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3
    assert lo_l < 0.5 < hi_l  # true mean of U(0,1)


def test_wider_confidence_gives_wider_interval():
    values = np.random.default_rng(2).normal(size=200)
    _, lo90, hi90 = bootstrap_ci(values, confidence=0.90)
    _, lo99, hi99 = bootstrap_ci(values, confidence=0.99)
    assert lo99 < lo90 and hi99 > hi90


def test_deterministic_with_same_seed():
    values = np.random.default_rng(3).normal(size=100)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_single_and_constant_values_and_empty():
    assert bootstrap_ci([0.4]) == (0.4, 0.4, 0.4)
    assert bootstrap_ci([0.7] * 50) == (0.7, 0.7, 0.7)
    assert bootstrap_ci(x for x in [1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_nan_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.1, float("nan")])


def test_paired_difference_detects_consistent_shift():
    rng = np.random.default_rng(4)
    a = rng.uniform(0, 1, 100)  # items differ a lot, but every item gains exactly 0.1
    diff, lo, hi = paired_difference(a, a + 0.1)
    assert diff == pytest.approx(0.1)
    assert lo > 0


def test_unpaired_noise_includes_zero():
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 1, 100), rng.uniform(0, 1, 100)  # same distribution, no real effect
    _, lo, hi = paired_difference(a, b)
    assert lo < 0 < hi


def test_paired_difference_length_mismatch():
    with pytest.raises(ValueError, match=r"len\(a\)=3.*len\(b\)=2"):
        paired_difference([1, 2, 3], [1, 2])


def _scores():
    rng = np.random.default_rng(6)
    rows = [{"model": m, "category": c, "item": f"{c}-{i}", "score": rng.uniform(0, 1)}
            for m in ("bloom", "llama") for c in ("math", "code", "rewrite") for i in range(20)]
    return pd.DataFrame(rows)


def test_summarise_adds_avg_row_per_higher_group():
    df = _scores()
    out = summarise(df, "score", ["model", "category"], n_boot=200)
    assert list(out.columns) == ["model", "category", "n", "mean", "ci_low", "ci_high"]
    assert len(out) == 2 * (3 + 1)
    avg = out[(out.model == "bloom") & (out.category == "avg")].iloc[0]
    assert avg["n"] == 60
    assert avg["mean"] == pytest.approx(df[df.model == "bloom"].score.mean())
    assert (out.ci_low <= out["mean"]).all() and (out["mean"] <= out.ci_high).all()


def test_summarise_single_label_column_and_no_label():
    df = _scores()
    out = summarise(df[df.model == "bloom"], "score", "category", n_boot=200)
    assert set(out.category) == {"math", "code", "rewrite", "avg"}
    plain = summarise(df, "score", ["model"], n_boot=200)
    assert list(plain.model) == ["bloom", "llama"]  # no label column -> no avg row


def test_compare_runs_paired_on_item_ids():
    df = _scores()
    a = df[df.model == "bloom"][["item", "score"]]
    b = a.sample(frac=1, random_state=0).assign(score=lambda d: d.score + 0.05)  # shuffled: join must align
    out = compare_runs(a, b, ["item"], "score", n_boot=500)
    assert out["n"] == 60
    assert out["diff"] == pytest.approx(0.05)
    assert out["mean_b"] - out["mean_a"] == pytest.approx(0.05)
    assert 0 < out["ci_low"] <= out["ci_high"]


def test_compare_runs_missing_items():
    df = _scores()
    a = df[df.model == "bloom"][["item", "score"]]
    with pytest.raises(ValueError, match="5 only in df_a, 0 only in df_b"):
        compare_runs(a, a.iloc[5:], "item", "score")


def test_compare_runs_duplicate_keys():
    a = pd.DataFrame({"item": [1, 1], "score": [0.1, 0.2]})
    with pytest.raises(ValueError, match="duplicate"):
        compare_runs(a, a, ["item"], "score")


def test_macro_average_weighs_groups_equally():
    from helpers.stats import macro_bootstrap_ci

    small, big = [1.0, 1.0], [0.0] * 98  # an item average would say 0.02
    mean, low, high = macro_bootstrap_ci([small, big], seed=1)
    assert mean == pytest.approx(0.5) and low <= mean <= high
    spread = macro_bootstrap_ci([[0, 1] * 5, [0, 1, 1] * 5], seed=1)
    assert spread[1] < spread[0] < spread[2]
