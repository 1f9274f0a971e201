"""Re-plot the paper's published numbers (data_samples/paper/*.csv) into figures/paper/, one figure per finding.

    python scripts/plot_paper_figures.py
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from helpers.paper import load_paper_table  # noqa: E402
from helpers.paths import project_path  # noqa: E402
from helpers.plots import DPI, plot_bars, setup_style  # noqa: E402

SOURCE = "source: Si et al. 2023, numbers as published"


def bars(table: str, index, columns: dict, *, xlabel: str, ylabel: str, title: str):
    """One grouped-bar figure from a paper table: one group per row (index: a column or several), a bar per column."""
    df = load_paper_table(table)
    keys = [index] if isinstance(index, str) else index
    df = df.set_index(df[keys].astype(str).agg(" · ".join, axis=1))
    series = {label: df[col].to_numpy(dtype=float) for col, label in columns.items()}
    return plot_bars(list(df.index), series, SOURCE, xlabel=xlabel, ylabel=ylabel, title=title)


FIGURES = {
    "01_bases": lambda: bars("fig1_instruction_tuning_gains", "model",
                             {"belle_after_lora_alpaca_gpt4": "Belle-eval after LoRA", "belle_gain": "Belle gain",
                              "mmcu_after_lora_alpaca_gpt4": "MMCU after LoRA", "mmcu_gain": "MMCU gain"},
                             xlabel="base model", ylabel="score / accuracy (%)",
                             title="Finding 1 · LoRA on Alpaca-GPT4 helps bases most (基座选择)"),
    "02_peft_methods": lambda: bars("table4_peft_methods", "method", {"belle": "Belle-eval", "mmcu": "MMCU"},
                                    xlabel="PEFT method", ylabel="score / accuracy (%)",
                                    title="Finding 2 · LoRA and SadapterH lead; prompt tuning trails (高效微调方法)"),
    "03_data_types": lambda: bars("table6_belle_eval_by_dataset", "dataset", {"avg": "Belle-eval avg"},
                                  xlabel="instruction dataset (LoRA on Bloom)", ylabel="score (0-100)",
                                  title="Finding 3 · ChatGPT-made data helps, NLP collections hurt (指令数据类型)"),
    "04_chain_of_thought": lambda: bars("table8_chain_of_thought", "data",
                                        {"belle_code": "Belle code", "belle_math": "Belle math",
                                         "mmcu_education": "MMCU education", "mmcu_avg": "MMCU avg"},
                                        xlabel="training data", ylabel="score / accuracy (%)",
                                        title="Finding 4 · CoT data helps code, math and education (思维链)"),
    "05_vocabulary": lambda: bars("fig3_vocabulary_expansion", "model", {"belle": "Belle-eval", "mmcu": "MMCU"},
                                  xlabel="LLaMA variant", ylabel="score / accuracy (%)",
                                  title="Finding 5 · Expanding the vocabulary needs pre-training (词表扩充)"),
    "06_prompt_language": lambda: bars("fig4_prompt_language", ["base", "prompt_language"], {"belle": "Belle-eval",
                                       "mmcu": "MMCU"}, xlabel="base · template language",
                                       ylabel="score / accuracy (%)", title="Finding 6 · Prompt language (提示语言)"),
    "07_human_values": lambda: bars("fig5_human_value_alignment", "setting", {"belle": "Belle-eval", "mmcu": "MMCU"},
                                    xlabel="training data", ylabel="score / accuracy (%)",
                                    title="Finding 7 · Human-value data costs a little (价值对齐)"),
}


def main() -> None:
    setup_style()
    out = project_path("figures/paper")
    out.mkdir(parents=True, exist_ok=True)
    for name, make in FIGURES.items():
        make().savefig(out / f"{name}.png", dpi=DPI, bbox_inches="tight")
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
