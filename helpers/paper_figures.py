"""The paper's findings re-plotted from data_samples/paper/, one figure per finding, each titled with the finding.

Every measure has its own panel (Belle-eval's ChatGPT-judge score, MMCU accuracy, gains), MMCU panels draw the
chance level, and every bar carries its value. A finding notebook shows `paper_figure(name)`, or puts its own
panels beside the paper's: `plot_panels(paper_panels(name)[0] + [our_panel], profile, title=...)`.
"""
from __future__ import annotations

import numpy as np

from .paper import load_paper_table
from .plots import PAPER_SOURCE, chance_level, plot_panels

__all__ = ["BELLE_AXIS", "MMCU_AXIS", "FINDINGS", "paper_panels", "paper_figure"]

BELLE_AXIS = "Belle-eval score (0-100, ChatGPT judge)"
MMCU_AXIS = "MMCU accuracy (%, generated answers)"
_KIND_COLORS = {"base": "#30638e", "sft": "#edae49"}
_KIND_LEGEND = [(_KIND_COLORS["base"], "pre-trained base"), (_KIND_COLORS["sft"], "already instruction-tuned")]
_DATA_COLORS = {"SI": "#30638e", "MIX": "#00798c", "COL": "#d1495b"}
_DATA_LEGEND = [(_DATA_COLORS["SI"], "made by ChatGPT/GPT-4 (self-instruct)"),
                (_DATA_COLORS["MIX"], "human + ChatGPT mix"), (_DATA_COLORS["COL"], "collection of NLP/exam datasets")]


def _col(df, name) -> np.ndarray:
    return df[name].to_numpy(dtype=float)


def _single(labels, values, ylabel, title, **extra) -> dict:
    """A one-series panel (kept out of the legend: the panel title names it)."""
    return dict(labels=labels, series={"_values": values}, ylabel=ylabel, title=title, **extra)


def _bases():
    df = load_paper_table("fig1_instruction_tuning_gains")
    colors = {"_values": [_KIND_COLORS[k] for k in df["kind"]]}
    labels, mmcu = list(df["model"]), dict(chance=chance_level(4), colors=colors)
    panels = [
        _single(labels, _col(df, "belle_after_lora_alpaca_gpt4"), BELLE_AXIS, "Belle-eval after LoRA", colors=colors),
        _single(labels, _col(df, "belle_gain"), "gain from tuning (points)", "Belle-eval gain", colors=colors),
        _single(labels, _col(df, "mmcu_after_lora_alpaca_gpt4"), MMCU_AXIS, "MMCU after LoRA", **mmcu),
        _single(labels, _col(df, "mmcu_gain"), "gain from tuning (points)", "MMCU gain", colors=colors),
    ]
    return panels, _KIND_LEGEND, "All: LoRA on Alpaca-GPT4 (Chinese), one epoch. Gain = after - before tuning."


def _peft_methods():
    df = load_paper_table("table4_peft_methods")
    colors = {"_values": ["#d1495b" if g == "large" else "#30638e" for g in df["group"]]}
    labels = list(df["method"])
    panels = [_single(labels, _col(df, "belle"), BELLE_AXIS, "Belle-eval", colors=colors),
              _single(labels, _col(df, "mmcu"), MMCU_AXIS, "MMCU", colors=colors, chance=chance_level(4))]
    legend = [("#30638e", "default size"), ("#d1495b", "-l: larger adapters (more parameters)")]
    return panels, legend, "All on Bloom, Alpaca-GPT4 data. Trainable parameters (M): " + ", ".join(
        f"{m} {p:g}" for m, p in zip(df["method"], df["trainable_params_millions"]))


def _data_types():
    kinds = load_paper_table("table5_chinese_instruction_datasets").set_index("dataset")["construction"]
    belle = load_paper_table("table6_belle_eval_by_dataset").set_index("dataset")
    mmcu = load_paper_table("table7_mmcu_by_dataset").set_index("dataset")
    base = "none (Bloom base)"
    order = sorted(kinds.index.intersection(belle.index), key=lambda d: ("SI", "MIX", "COL").index(kinds[d]))
    colors = {"_values": [_DATA_COLORS[kinds[d]] for d in order]}
    panels = [_single(order, belle.loc[order, "avg"].to_numpy(float), BELLE_AXIS, "Belle-eval (table 6)",
                      colors=colors, reference=(belle.loc[base, "avg"], "Bloom base, untuned")),
              _single(order, mmcu.loc[order, "avg"].to_numpy(float), MMCU_AXIS, "MMCU (table 7)", colors=colors,
                      reference=(mmcu.loc[base, "avg"], "Bloom base, untuned"), chance=chance_level(4))]
    exam = mmcu.loc["COIG-exam"]
    note = (f"COIG-exam: the paper gives no education score, hence no MMCU average (n/a); its medicine "
            f"({exam['medicine']:.1f}) and psychology ({exam['psychology']:.1f}) scores are the highest of all sets.")
    return panels, _DATA_LEGEND, "LoRA on Bloom, one dataset each. " + note


def _chain_of_thought():
    df = load_paper_table("table8_chain_of_thought")
    names = ["Alpaca-GPT4", "+ CoT data", "+ CoT data, 先思考，再决定 at inference"]

    def panel(cols, ylabel, title, **extra):  # one group per measure, one bar per training setting
        series = {name: df.loc[i, cols].to_numpy(float) for i, name in enumerate(names)}
        return dict(labels=[c.split("_", 1)[1] for c in cols], series=series, ylabel=ylabel, title=title, **extra)

    panels = [panel(["belle_code", "belle_math", "belle_avg"], BELLE_AXIS, "Belle-eval"),
              panel(["mmcu_education", "mmcu_avg"], MMCU_AXIS, "MMCU", chance=chance_level(4))]
    return panels, (), "CoT data: 9 FLAN chain-of-thought sets translated into Chinese, added to Alpaca-GPT4 (Bloom)."


def _vocabulary():
    df = load_paper_table("fig3_vocabulary_expansion")
    labels = ["LLaMA", "+ Chinese vocab\n(no pre-training)", "+ vocab, 20B zh\ntokens (-pre)",
              "+ vocab, 100B zh\ntokens (-pre-l)"]
    panels = [_single(labels, _col(df, "belle"), BELLE_AXIS, "Belle-eval"),
              _single(labels, _col(df, "mmcu"), MMCU_AXIS, "MMCU", chance=chance_level(4))]
    note = ("-pre / -pre-l: after adding Chinese tokens to LLaMA's vocabulary, the model was further pre-trained on "
            "20B / 100B tokens of Chinese text before the same instruction tuning.")
    return panels, (), note


def _prompt_language():
    df = load_paper_table("fig4_prompt_language")
    labels = list(dict.fromkeys(df["base"]))

    def series(measure):  # one group per base, one bar per template language
        return {f"{lang} template": df[df["prompt_language"] == lang].set_index("base").reindex(labels)[measure]
                .to_numpy(float) for lang in dict.fromkeys(df["prompt_language"])}

    panels = [dict(labels=labels, series=series("belle"), ylabel=BELLE_AXIS, title="Belle-eval"),
              dict(labels=labels, series=series("mmcu"), ylabel=MMCU_AXIS, title="MMCU", chance=chance_level(4))]
    return panels, (), "Same data and LoRA recipe; only the language of the instruction template differs."


def _human_values():
    df = load_paper_table("fig5_human_value_alignment")
    labels = list(df["setting"])
    panels = [_single(labels, _col(df, "belle"), BELLE_AXIS, "Belle-eval"),
              _single(labels, _col(df, "mmcu"), MMCU_AXIS, "MMCU", chance=chance_level(4))]
    return panels, (), "Bloom + LoRA on Alpaca-GPT4, with and without COIG's human-value alignment data mixed in."


# name -> (title stating the finding, panel builder)
FINDINGS = {
    "01_bases": ("Finding 1 · Tuning helps pre-trained bases; already-tuned models can lose (Vicuna, ChatGLM on "
                 "Belle-eval; Bloomz on MMCU). Bloom is the best base", _bases),
    "02_peft_methods": ("Finding 2 · LoRA and SadapterH lead; prompt tuning trails; more parameters (-l) "
                        "do not reliably help",
                        _peft_methods),
    "03_data_types": ("Finding 3 · ChatGPT-made data lifts Belle-eval; NLP-task collections hurt it but help MMCU",
                      _data_types),
    "04_chain_of_thought": ("Finding 4 · CoT data lifts code, math and MMCU education; "
                            "'先思考，再决定' adds to code and education", _chain_of_thought),
    "05_vocabulary": ("Finding 5 · A Chinese vocabulary needs Chinese pre-training: without it Belle-eval collapses "
                      "(43.7 → 9.9)", _vocabulary),
    "06_prompt_language": ("Finding 6 · A Chinese template helps LLaMA (weak in Chinese); Bloom does better with "
                           "the English one", _prompt_language),
    "07_human_values": ("Finding 7 · Mixing in human-value data costs a little: Belle-eval 58.1 → 57.2, "
                        "MMCU 19.1 → 15.7", _human_values),
}


def paper_panels(name: str):
    """(panels, legend patches, footnote) of one finding, for plot_panels or to extend with our own panels."""
    if name not in FINDINGS:
        raise ValueError(f"no paper figure {name!r}; available: {', '.join(FINDINGS)}")
    return FINDINGS[name][1]()


def paper_figure(name: str):
    """One finding's figure from the paper's published numbers, titled with the finding and the source."""
    panels, legend, note = paper_panels(name)
    return plot_panels(panels, PAPER_SOURCE, title=FINDINGS[name][0], ncols=2, legend=legend, note=note)
