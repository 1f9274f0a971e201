"""helpers.judge against a real loopback HTTP server (tests/fake_openai_server.py); no HTTP mocking."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests


from helpers import judge
from helpers.judge import (
    CATEGORIES, JUDGE_PROMPT_VERSION, REFERENCE_FREE_CATEGORIES, JudgeError, JudgeSettings, build_judge_messages,
    judge_many, judge_one, judge_settings_from_env, parse_score,
)
from fake_openai_server import FakeJudgeServer, echo_reply

ROOT = Path(__file__).resolve().parents[1]

KEY = "sk-test-PLANTED-7f3a9c1e-do-not-leak"
ITEM = {"category": "math", "question": "1+1=?", "reference": "2", "response": "答案是 2"}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    return KEY


@pytest.fixture
def delays(monkeypatch):
    """Record backoff delays instead of sleeping, so retry tests are instant."""
    recorded = []
    monkeypatch.setattr(judge, "_sleep", recorded.append)
    return recorded


def settings_for(server, **overrides):
    base = {"base_url": server.base_url, "model": "judge-test", "timeout_s": 5.0,
            "max_retries": 2, "backoff_s": 0.01}
    return JudgeSettings(**{**base, **overrides})


def run_one(settings, item=ITEM):
    return judge_one(settings, item["category"], item["question"], item["reference"], item["response"])


def cache_entries(cache_dir):
    return sorted(p.name for p in Path(cache_dir).glob("*.json"))


# ---------------------------------------------------------------------------------------------- basics

def test_good_score_and_request_shape():
    with FakeJudgeServer(replies=["理由：答案正确。\n分数: 8"]) as srv:
        out = run_one(settings_for(srv))
    assert out == {"score": 0.8, "raw": "理由：答案正确。\n分数: 8", "cached": False, "judge_model": "judge-test",
                   "endpoint": srv.base_url, "rubric": "cookbook", "prompt_version": JUDGE_PROMPT_VERSION}
    (req,) = srv.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["json"]["model"] == "judge-test" and req["json"]["temperature"] == 0
    assert req["json"]["messages"] == build_judge_messages(**ITEM)
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"


def test_malformed_non_json_reply_fails_at_once():
    with FakeJudgeServer(replies=[("raw", b"not json"), "分数: 8"]) as srv:
        with pytest.raises(JudgeError, match="malformed reply"):
            run_one(settings_for(srv))
    assert len(srv.requests) == 1


def test_malformed_json_without_choices():
    with FakeJudgeServer(replies=[("raw", b'{"choices": []}')]) as srv:
        with pytest.raises(JudgeError, match="malformed reply"):
            run_one(settings_for(srv))


def test_out_of_range_score_is_reasked_once_then_fails():
    with FakeJudgeServer(replies=["分数: 15"]) as srv:
        with pytest.raises(JudgeError, match="out of range"):
            run_one(settings_for(srv))
    assert len(srv.requests) == 2
    reask = srv.requests[1]["json"]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "分数: 15"}  # the judge sees its own slip
    assert "分数: N" in reask[-1]["content"]


def test_unparseable_then_good_reply_succeeds_after_reask():
    with FakeJudgeServer(replies=["我觉得还行", "分数: 6"]) as srv:
        assert run_one(settings_for(srv))["score"] == pytest.approx(0.6)
    assert len(srv.requests) == 2


# ---------------------------------------------------------------------------------------------- retries

def test_timeout_is_retried_then_clear_error(delays):
    with FakeJudgeServer(replies=[("sleep", 1.0)]) as srv:
        settings = settings_for(srv, timeout_s=0.3, max_retries=1)
        t0 = time.monotonic()
        with pytest.raises(JudgeError) as err:
            run_one(settings)
        assert time.monotonic() - t0 < 1.5
    msg = str(err.value)
    assert "timed out" in msg and "2 attempts" in msg and srv.base_url in msg
    assert len(delays) == 1


def test_timeout_then_success(delays):
    with FakeJudgeServer(replies=[("sleep", 1.0), "分数: 9"]) as srv:
        out = run_one(settings_for(srv, timeout_s=0.3))
    assert out["score"] == pytest.approx(0.9)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_status_then_success(status, delays):
    with FakeJudgeServer(replies=[("status", status), "分数: 7"]) as srv:
        out = run_one(settings_for(srv))
    assert out["score"] == pytest.approx(0.7)
    assert len(srv.requests) == 2
    assert delays == [0.01]


@pytest.mark.parametrize("status", [429, 500])
def test_transient_status_forever_fails_naming_status_and_attempts(status, delays):
    with FakeJudgeServer(replies=[("status", status)]) as srv:
        with pytest.raises(JudgeError) as err:
            run_one(settings_for(srv, max_retries=3))
    msg = str(err.value)
    assert f"HTTP {status}" in msg and "4 attempts" in msg and srv.base_url in msg
    assert len(srv.requests) == 4
    assert delays == pytest.approx([0.01, 0.02, 0.04])  # exponential backoff


def test_retry_after_is_honoured_and_capped(delays):
    replies = [("status", 429, {"Retry-After": "3"}), ("status", 429, {"Retry-After": "100000"}), "分数: 5"]
    with FakeJudgeServer(replies=replies) as srv:
        assert run_one(settings_for(srv))["score"] == pytest.approx(0.5)
    assert delays == [3.0, judge._MAX_RETRY_AFTER_S]


def test_other_4xx_fails_at_once(delays):
    with FakeJudgeServer(replies=["分数: 5"], api_key="a-different-key") as srv:
        with pytest.raises(JudgeError, match="HTTP 401"):
            run_one(settings_for(srv))
    assert len(srv.requests) == 1 and delays == []


def test_connection_refused_is_retried(delays):
    with socket.socket() as s:  # grab a free port, then close it so nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = JudgeSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff_s=0.01)
    with pytest.raises(JudgeError, match="connection error.*3 attempts"):
        run_one(settings)


# ---------------------------------------------------------------------------------------------- cache

def test_second_run_hits_cache_with_zero_requests(tmp_path):
    cache = str(tmp_path / "judge-cache")
    with FakeJudgeServer(replies=["分数: 8", "分数: 1"]) as srv:
        first = run_one(settings_for(srv, cache_path=cache))
        second = run_one(settings_for(srv, cache_path=cache))
    assert len(srv.requests) == 1
    assert first["cached"] is False and second["cached"] is True
    assert second["score"] == first["score"] == 0.8 and second["raw"] == first["raw"]
    assert len(cache_entries(cache)) == 1


def test_cache_is_keyed_by_endpoint(tmp_path):
    """Issue 7.8: the same model name at another URL is another judge, so its verdicts are its own."""
    cache = str(tmp_path / "judge-cache")
    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        first = run_one(settings_for(srv, cache_path=cache))
    with FakeJudgeServer(replies=["分数: 1"]) as srv2:
        second = run_one(settings_for(srv2, cache_path=cache))
        assert len(srv2.requests) == 1
    assert (first["score"], second["score"]) == (0.8, 0.1) and second["cached"] is False
    assert len(cache_entries(cache)) == 2


def test_cache_is_keyed_by_rubric_category_and_reference(tmp_path):
    cache = str(tmp_path / "c")
    with FakeJudgeServer(replies=["分数: 8", "得分: 0.8", "分数: 7", "分数: 6"]) as srv:
        run_one(settings_for(srv, cache_path=cache))
        assert run_one(settings_for(srv, cache_path=cache, rubric="belle"))["score"] == pytest.approx(0.8)
        run_one(settings_for(srv, cache_path=cache), {**ITEM, "category": "classification"})
        run_one(settings_for(srv, cache_path=cache), {**ITEM, "reference": "二"})
    assert len(srv.requests) == 4 and len(cache_entries(cache)) == 4


def test_a_cache_entry_of_another_endpoint_is_not_trusted(tmp_path):
    cache = tmp_path / "c"
    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        run_one(settings_for(srv, cache_path=str(cache)))
        (entry,) = cache.glob("*.json")
        entry.write_text(entry.read_text(encoding="utf-8").replace(srv.base_url, "http://elsewhere:1/v1"),
                         encoding="utf-8")
        assert run_one(settings_for(srv, cache_path=str(cache)))["cached"] is False


def test_cache_is_keyed_by_judge_model_and_inputs(tmp_path):
    cache = str(tmp_path / "c")
    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        run_one(settings_for(srv, cache_path=cache))
        run_one(settings_for(srv, cache_path=cache, model="another-judge"))
        run_one(settings_for(srv, cache_path=cache), {**ITEM, "response": "答案是 3"})
    assert len(srv.requests) == 3 and len(cache_entries(cache)) == 3


def test_crash_during_cache_write_leaves_no_partial_entry(tmp_path, monkeypatch):
    cache = tmp_path / "c"

    def crash(src, dst):
        assert Path(src).read_text(encoding="utf-8")  # the temp file was fully written...
        raise OSError("simulated crash before rename")  # ...but the process dies before the rename

    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        monkeypatch.setattr(judge.os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            run_one(settings_for(srv, cache_path=str(cache)))
        monkeypatch.undo()
        monkeypatch.setenv("JUDGE_API_KEY", KEY)
        assert list(cache.iterdir()) == []  # no entry, and the temp file was cleaned up
        out = run_one(settings_for(srv, cache_path=str(cache)))
    assert out["cached"] is False and len(srv.requests) == 2  # the item was re-judged
    assert len(cache_entries(cache)) == 1


def test_hard_kill_mid_write_then_rerun_rejudges(tmp_path):
    """A process killed between writing the temp file and renaming it leaves only an ignored *.tmp."""
    cache = tmp_path / "c"
    script = (
        "import os, sys\n"
        "from helpers import judge\n"
        "judge.os.replace = lambda *a: os._exit(9)  # die abruptly: no cleanup, no finally\n"
        "s = judge.JudgeSettings(base_url=sys.argv[2], model='judge-test', cache_path=sys.argv[3])\n"
        "judge.judge_one(s, 'math', '1+1=?', '2', '答案是 2')\n"
    )
    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        proc = subprocess.run([sys.executable, "-c", script, str(ROOT), srv.base_url, str(cache)],
                              env={**os.environ, "JUDGE_API_KEY": KEY}, timeout=60)
        assert proc.returncode == 9
        leftovers = [p.name for p in cache.iterdir()]
        assert leftovers and all(name.endswith(".tmp") for name in leftovers)
        assert cache_entries(cache) == []
        out = run_one(settings_for(srv, cache_path=str(cache)))
    assert out["cached"] is False and len(srv.requests) == 2


def test_corrupt_cache_entry_is_a_miss(tmp_path):
    cache = tmp_path / "c"
    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        run_one(settings_for(srv, cache_path=str(cache)))
        (entry,) = cache.glob("*.json")
        entry.write_text('{"score": 0.8, "raw": "分', encoding="utf-8")  # torn by some outside tool
        assert run_one(settings_for(srv, cache_path=str(cache)))["cached"] is False
    assert len(srv.requests) == 2


# ---------------------------------------------------------------------------------------------- the key

def test_api_key_sent_but_never_leaked(tmp_path, delays):
    cache = tmp_path / "c"
    with FakeJudgeServer(replies=["分数: 8", ("status", 429), ("raw", f"oops {KEY}".encode()),
                                  ("status", 400)]) as srv:
        settings = settings_for(srv, cache_path=str(cache), max_retries=0)
        run_one(settings)
        errors = []
        for response in ("b", "c", "d"):
            with pytest.raises(JudgeError) as err:
                run_one(settings, {**ITEM, "response": response})
            errors.append(str(err.value) + repr(err.value))
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in srv.requests)
    assert "HTTP 429" in errors[0] and "malformed reply" in errors[1] and "HTTP 400" in errors[2]
    assert not any(KEY in e for e in errors)
    assert KEY not in repr(settings) and KEY not in str(settings)
    for path in cache.rglob("*"):
        assert KEY not in path.read_text(encoding="utf-8")


def test_missing_key_names_the_variable_and_sends_nothing(monkeypatch):
    monkeypatch.delenv("JUDGE_API_KEY")
    with FakeJudgeServer(replies=["分数: 8"]) as srv:
        with pytest.raises(JudgeError, match="JUDGE_API_KEY"):
            run_one(settings_for(srv))
    assert srv.requests == []


def test_settings_from_env(monkeypatch):
    monkeypatch.delenv("JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("JUDGE_MODEL", raising=False)
    assert judge_settings_from_env() is None
    monkeypatch.setenv("JUDGE_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("JUDGE_MODEL", "gpt-4o-mini")
    s = judge_settings_from_env(cache_path="/tmp/x")
    assert (s.base_url, s.model, s.cache_path, s.api_key_env) == (
        "http://127.0.0.1:9/v1", "gpt-4o-mini", "/tmp/x", "JUDGE_API_KEY")
    assert judge_settings_from_env(model="other").model == "other"
    assert KEY not in repr(s)
    monkeypatch.delenv("JUDGE_MODEL")
    with pytest.raises(JudgeError, match="JUDGE_MODEL"):
        judge_settings_from_env()


# ---------------------------------------------------------------------------------------------- batch

def test_judge_many_in_order_and_uses_cache(tmp_path):
    items = [{**ITEM, "response": r} for r in ("a", "bb", "ccc")]
    with FakeJudgeServer(replies=["分数: 1", "分数: 2", "分数: 3"]) as srv:
        settings = settings_for(srv, cache_path=str(tmp_path / "c"))
        first = judge_many(settings, items, progress=False)
        second = judge_many(settings, items, progress=False)
    assert [r["score"] for r in first] == pytest.approx([0.1, 0.2, 0.3])
    assert [r["score"] for r in second] == pytest.approx([0.1, 0.2, 0.3])
    assert all(r["cached"] for r in second) and len(srv.requests) == 3


def test_judge_many_names_the_failing_item(delays):
    items = [{**ITEM, "response": r} for r in ("a", "b")]
    with FakeJudgeServer(replies=["分数: 5", ("status", 500)]) as srv:
        with pytest.raises(JudgeError, match=r"^item 1: .*HTTP 500"):
            judge_many(settings_for(srv), items, progress=False)


def test_judge_many_checks_fields_before_any_request():
    with FakeJudgeServer(replies=["分数: 5"]) as srv:
        with pytest.raises(JudgeError, match="item 1: missing field.*reference"):
            judge_many(settings_for(srv), [ITEM, {"category": "math", "question": "q", "response": "r"}],
                       progress=False)
    assert srv.requests == []


# ---------------------------------------------------------------------------------------------- prompts, parsing

@pytest.mark.parametrize("text, expected", [
    ("分数: 7", 0.7),
    ("分数：7.5", 0.75),
    ("分数：７", 0.7),
    ("分数：１０", 1.0),
    ("Score: 8/10", 0.8),
    ("score:8 / 10", 0.8),
    ("**分数**: 9", 0.9),
    ("【分数】：6", 0.6),
    ("得分: 4", 0.4),
    ("分数: 0", 0.0),
    ("回答较好。\n分数: 3\n复核后修正。\n分数: 5", 0.5),  # the last score line wins
    ("分数为 6 分", 0.6),
])
def test_parse_score_variants(text, expected):
    assert parse_score(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["分数: 12", "分数: -1", "Score: 11/10"])
def test_parse_score_out_of_range(text):
    with pytest.raises(JudgeError, match="out of range"):
        parse_score(text)


# ---------------------------------------------------------------------------------------------- scales (#7.9)

@pytest.mark.parametrize("text, scale, expected", [
    ("得分: 0.8", 1, 0.8),  # Belle's 0-1 scale: 0.8 stays 0.8, never 0.08
    ("得分：1", 1, 1.0), ("得分: 0", 1, 0.0), ("得分: 0.75/1", 1, 0.75), ("理由……\n得分: 0.35", 1.0, 0.35),
    ("分数: 8", 10, 0.8), ("分数: 7.5", 10, 0.75), ("Score: 8/10", 10, 0.8), ("分数: 1", 10, 0.1),
])
def test_parse_score_reads_the_declared_scale(text, scale, expected):
    assert parse_score(text, scale) == pytest.approx(expected)


@pytest.mark.parametrize("text, scale, message", [
    ("得分: 0.8", 10, "ambiguous.*a 0-1 score"),  # 0.8 on a 0-10 rubric: the judge likely meant 0.8 of 1
    ("得分: 8", 1, "out of range 0-1"),
    ("得分: 8/10", 1, "ambiguous.*0-1"),
    ("分数: 85/100", 10, "ambiguous.*0-10"),
    ("得分: 0.6-0.8", 1, "ambiguous"),
    ("分数: 7到8", 10, "ambiguous"),
])
def test_parse_score_refuses_other_scales(text, scale, message):
    with pytest.raises(JudgeError, match=message):
        parse_score(text, scale)


def test_belle_rubric_scores_on_0_1_and_the_default_rubric_reasks_a_0_1_reply(tmp_path):
    cache = str(tmp_path / "c")
    with FakeJudgeServer(replies=["回答正确。\n得分: 0.8"]) as srv:
        out = run_one(settings_for(srv, cache_path=cache, rubric="belle"))
    assert out["score"] == pytest.approx(0.8) and out["rubric"] == "belle"
    system = srv.requests[0]["json"]["messages"][0]["content"]
    assert "0 到 1" in system and "得分: X" in system
    with FakeJudgeServer(replies=["得分: 0.8"]) as srv:  # the 0-10 rubric, answered on 0-1: re-asked, then fails
        with pytest.raises(JudgeError, match="ambiguous"):
            run_one(settings_for(srv, cache_path=cache))
    assert len(srv.requests) == 2 and "0 到 10" in srv.requests[1]["json"]["messages"][-1]["content"]
    assert len(cache_entries(cache)) == 1  # the ambiguous verdict was never cached


def test_an_ambiguous_reply_then_a_clear_one_is_cached_once(tmp_path):
    cache = str(tmp_path / "c")
    with FakeJudgeServer(replies=["分数: 0.8", "分数: 8"]) as srv:
        out = run_one(settings_for(srv, cache_path=cache))
    assert out["score"] == pytest.approx(0.8) and out["raw"] == "分数: 8" and len(srv.requests) == 2
    assert len(cache_entries(cache)) == 1


# ---------------------------------------------------------------------------------------------- base_url (#7.10)

@pytest.mark.parametrize("url", ["api.openai.com/v1", "localhost:8000/v1", "ftp://host/v1", "http://", "https:///v1",
                                 "http://host:port/v1", "", None])
def test_base_url_without_scheme_or_host_is_a_clear_error(url, monkeypatch):
    with pytest.raises(JudgeError, match=r"is not an http\(s\) URL with a host.*https://api.openai.com/v1"):
        JudgeSettings(base_url=url, model="m")
    monkeypatch.setenv("JUDGE_MODEL", "m")
    if url:
        with pytest.raises(JudgeError, match="not an http"):
            judge_settings_from_env(base_url=url)


def test_base_url_is_normalised_and_rubric_checked():
    assert JudgeSettings(base_url="https://api.example.com/v1/", model="m").base_url == "https://api.example.com/v1"
    with pytest.raises(JudgeError, match="unknown judge rubric 'gpt'.*cookbook, belle"):
        JudgeSettings(base_url="http://127.0.0.1:9/v1", model="m", rubric="gpt")


def test_parse_score_unparseable_quotes_the_start():
    text = "这个回答很好" + "啊" * 300
    with pytest.raises(JudgeError, match="unparseable judge reply") as err:
        parse_score(text)
    assert text[:200] in str(err.value) and text[:201] not in str(err.value)


@pytest.mark.parametrize("rubric, scale_text, line", [("cookbook", "0 到 10", "分数: N"), ("belle", "0 到 1", "得分: X")])
def test_every_category_has_its_own_prompt(rubric, scale_text, line):
    users = set()
    for category in CATEGORIES:
        msgs = build_judge_messages(category, "问题Q", "参考R", "回答A", rubric)
        assert [m["role"] for m in msgs] == ["system", "user"]
        assert line in msgs[0]["content"] and scale_text in msgs[0]["content"]  # the rubric states its scale
        assert all(part in msgs[1]["content"] for part in ("问题Q", "回答A"))
        assert ("参考R" in msgs[1]["content"]) == (category not in REFERENCE_FREE_CATEGORIES)
        users.add(msgs[1]["content"])
    assert len(users) == len(CATEGORIES) == 10
    assert "最终答案" in build_judge_messages("math", "q", "r", "a")[1]["content"]
    assert "忠实" in build_judge_messages("close_qa", "q", "r", "a")[1]["content"]


@pytest.mark.parametrize("rubric", ["cookbook", "belle"])
def test_open_categories_and_empty_references_are_judged_without_a_reference(rubric):
    """Issue 7.2: Belle judges brainstorming, generation and rewrite without a reference; so do we."""
    assert set(REFERENCE_FREE_CATEGORIES) == {"brainstorm", "generation", "rewrite"}
    for category, reference in [("generation", ""), ("brainstorm", "有参考也不用"), ("math", ""), ("code", "  ")]:
        system, user = (m["content"] for m in build_judge_messages(category, "问题Q", reference, "回答A", rubric))
        assert "【参考答案】" not in user and "没有标准答案" in system
        assert "参考答案" not in system.replace("没有标准答案", "")  # no mention of a reference it never sees
    system, user = (m["content"] for m in build_judge_messages("math", "问题Q", "2", "回答A", rubric))
    assert "【参考答案】\n2" in user and ("参考答案" in system or "标准答案" in system)


def test_unknown_category_lists_valid_ones():
    with pytest.raises(JudgeError, match="unknown category 'poetry'.*code.*extract"):
        build_judge_messages("poetry", "q", "r", "a")


# ---------------------------------------------------------------------------------------------- fake server

def test_fake_server_echo_mode_is_deterministic():
    with FakeJudgeServer(replies=None) as srv:
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 25}]}
        reply = requests.post(srv.base_url + "/chat/completions", json=body, timeout=5).json()
        assert reply["choices"][0]["message"]["content"] == "分数: 3" == echo_reply(body)
        out = run_one(settings_for(srv))
    n = len(build_judge_messages(**ITEM)[-1]["content"]) % 11
    assert out["score"] == pytest.approx(n / 10)


def test_fake_server_cli_writes_base_url_and_serves(tmp_path):
    port_file = tmp_path / "url"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai_server.py"),
                             "--port-file", str(port_file)])
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        base_url = port_file.read_text(encoding="utf-8")
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        settings = JudgeSettings(base_url=base_url, model="m")
        assert 0.0 <= run_one(settings)["score"] <= 1.0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_every_belle_category_has_a_criterion_in_both_rubrics():
    from helpers.eval_sets import BELLE_CATEGORIES
    from helpers.judge import RUBRICS

    assert CATEGORIES == BELLE_CATEGORIES
    assert all(set(rubric["criteria"]) == set(BELLE_CATEGORIES) for rubric in RUBRICS.values())
