"""Re-plot the paper's published numbers (data_samples/paper/*.csv) into figures/paper/, one figure per finding.

    python scripts/plot_paper_figures.py

The figures themselves are built by helpers.paper_figures, which the finding notebooks use too.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from helpers.paper_figures import FINDINGS, paper_figure  # noqa: E402
from helpers.paths import project_path  # noqa: E402
from helpers.plots import DPI, setup_style  # noqa: E402


def main() -> None:
    setup_style()
    out = project_path("figures/paper")
    out.mkdir(parents=True, exist_ok=True)
    for name in FINDINGS:
        paper_figure(name).savefig(out / f"{name}.png", dpi=DPI, bbox_inches="tight")
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
