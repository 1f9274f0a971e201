"""Finding 04's CoT* arm: profile.eval_suffix reaches the evaluation prompts only when set, and never training."""
import pytest

from helpers import evaluate, experiment, generation
from helpers.eval_sets import load_belle_eval, load_exam
from helpers.evaluate import build_mc_prompt, with_eval_suffix
from helpers.models import load_model, load_tokenizer
from helpers.profiles import get_profile

SUFFIX = "先思考，再决定"


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    source = str(tiny_dir("qwen2"))
    return load_model(source, compute_dtype="float32"), load_tokenizer(source)


@pytest.fixture
def spies(monkeypatch):
    """Record every prompt generated from, with its max_new_tokens, and every log-likelihood context."""
    seen = {"generated": [], "budgets": [], "scored": []}
    real_generate, real_score = generation.generate, evaluate.score_choices

    def generate(model, tokenizer, prompts, **kwargs):
        seen["generated"] += prompts
        seen["budgets"] += [kwargs["max_new_tokens"]] * len(prompts)
        return real_generate(model, tokenizer, prompts, **kwargs)

    def score_choices(model, tokenizer, contexts, **kwargs):
        seen["scored"] += contexts
        return real_score(model, tokenizer, contexts, **kwargs)

    monkeypatch.setattr(generation, "generate", generate)
    monkeypatch.setattr(evaluate, "score_choices", score_choices)
    return seen


def test_with_eval_suffix_is_the_one_path():
    assert with_eval_suffix("问题", "") == "问题"
    assert with_eval_suffix("问题", SUFFIX) == f"问题\n{SUFFIX}"
    row = {"subject": "law", "question": "问题", "A": "a", "B": "b", "C": "c", "D": "d"}
    assert build_mc_prompt(row, eval_suffix=SUFFIX) == build_mc_prompt(row).replace("\n答案：", f"\n{SUFFIX}\n答案：")


@pytest.mark.parametrize("suffix", ["", SUFFIX], ids=["instruction arm", "CoT* arm"])
def test_eval_suffix_reaches_the_prompts_only_when_set(tiny, spies, suffix):
    model, tokenizer = tiny
    profile = get_profile("smoke", eval_suffix=suffix, max_new_tokens=2, exam_max_new_tokens=3)
    benchmarks = {"belle": load_belle_eval(profile.eval_data, limit=3), "exam": load_exam(profile.exam_data, limit=2),
                  "exam_dev": load_exam(profile.exam_dev_data, split="dev")}
    out = experiment.evaluate_model(model, tokenizer, profile, benchmarks, label="arm", progress=False)
    belle_prompts, exam_prompts = spies["generated"][:3], spies["generated"][3:]
    assert len(belle_prompts) == 3 and len(exam_prompts) == 2 and spies["budgets"] == [2, 2, 2, 3, 3]
    for question, prompt in zip(benchmarks["belle"]["question"], belle_prompts):
        assert question in prompt and (f"{question}\n{SUFFIX}" in prompt) == bool(suffix)
    assert all((f"{SUFFIX}\n答案：" in p) == bool(suffix) for p in exam_prompts)
    assert len(spies["scored"]) == 2 and not any(SUFFIX in c for c in spies["scored"])  # loglik: no room to think
    assert list(out["answers"]["question"]) == list(benchmarks["belle"]["question"])  # items themselves untouched


def test_eval_suffix_never_reaches_training(tiny, monkeypatch, tmp_path):
    model, tokenizer = tiny
    captured = []
    monkeypatch.setattr(experiment, "train_model", lambda m, t, dataset, p, out: captured.append(dataset))
    for suffix in ("", SUFFIX):
        experiment.tune(model, tokenizer, get_profile("smoke", eval_suffix=suffix, train_limit=8), tmp_path)
    plain, cot_star = ({key: list(ds[key]) for key in ("input_ids", "labels")} for ds in captured)
    assert len(plain["input_ids"]) == 8 and plain == cot_star
    assert tokenizer.decode(tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]) == SUFFIX  # could be seen
    assert not any(SUFFIX in tokenizer.decode(ids) for ids in cot_star["input_ids"])


def test_the_runner_reevaluates_the_cot_adapter_with_the_cue_only_in_the_cot_star_arm(tmp_path, spies, monkeypatch):
    # Notebook 04's third arm: the same training data as the CoT arm plus eval_suffix. It must reuse that arm's
    # adapter (one training run), and only its prompts may carry the cue: checked on the prompts generated from
    # and on what the runner stored ("asked").
    import transformers

    from helpers import arms

    trained = []
    real_train = transformers.Trainer.train
    monkeypatch.setattr(transformers.Trainer, "train",
                        lambda self, *a, **k: trained.append(1) or real_train(self, *a, **k))
    profile = get_profile("smoke", max_steps=2, save_steps=2, train_limit=16, eval_limit=4, exam_limit=4,
                          max_new_tokens=2, exam_max_new_tokens=3, eval_batch_size=16, output_root=str(tmp_path))
    data = "data_samples/instructions_zh.json:8 + data_samples/cot_zh.json:8"
    run = arms.run_arms(profile, [{"name": "CoT", "train_data": data},
                                  {"name": "CoT*", "train_data": data, "eval_suffix": SUFFIX, "compare_to": "CoT"}],
                        progress=False, n_boot=100)
    info = run["arms"].set_index("arm")
    assert len(trained) == 1 and info["status"].tolist() == ["trained", "evaluated"] and info["key"].nunique() == 1
    cued = run["answers"].assign(cued=run["answers"]["asked"].str.endswith(f"\n{SUFFIX}")).groupby("arm")["cued"]
    assert cued.agg(["size", "sum"]).to_dict("index") == {"CoT": {"size": 4, "sum": 0}, "CoT*": {"size": 4, "sum": 4}}
    generated = spies["generated"]  # per arm: 4 instructions, then 4 exam questions
    assert spies["budgets"] == ([2] * 4 + [3] * 4) * 2
    assert not any(SUFFIX in p for p in generated[:8]) and all(SUFFIX in p for p in generated[8:])
    assert not any(SUFFIX in c for c in spies["scored"])
    assert run["table"].set_index("arm").loc["CoT*", "against"].tolist() == ["CoT"] * 3  # ROUGE-L, generate, loglik
