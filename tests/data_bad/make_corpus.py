"""Regenerate the malformed-data corpus used by tests/test_data.py.

Run from anywhere: python tests/data_bad/make_corpus.py
Each file holds one problem and is named after it; the generated files are committed, so the
tests do not depend on running this script. Texts are written literally (not json.dumps) so the
line numbers the tests assert are visible right here.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
BOM = b"\xef\xbb\xbf"

ALPACA_OK = """[
  {"instruction": "把这句话翻译成英文", "input": "今天天气很好", "output": "The weather is nice today."},
  {
    "instruction": "写一首关于春天的短诗",
    "output": "春风拂面，花开满园。",
    "category": "写作"
  },
  {"instruction": "1+1 等于几？", "input": "", "output": "2", "system": "你是一个数学老师。"}
]
"""

SHAREGPT_OK = """[
  {
    "id": "conv-1",
    "conversations": [
      {"from": "system", "value": "你是一个乐于助人的助手。"},
      {"from": "human", "value": "你好"},
      {"from": "gpt", "value": "你好！有什么可以帮你？"},
      {"from": "human", "value": "介绍一下北京"},
      {"from": "gpt", "value": "北京是中国的首都。"}
    ]
  },
  {"id": "conv-2", "conversations": [{"from": "user", "value": "讲个笑话"}, {"from": "assistant", "value": "从前有座山……"}]}
]
"""

MESSAGES_OK = (
    '{"messages": [{"role": "system", "content": "请用中文回答。"}, {"role": "user", "content": "什么是大模型？"},'
    ' {"role": "assistant", "content": "大模型是参数量很大的神经网络。"}]}\n'
    '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},'
    ' {"role": "user", "content": "再见"}, {"role": "assistant", "content": "再见！"}], "category": "闲聊"}\n'
)

BAD_JSON_ARRAY = """[
  {"instruction": "第一条", "output": "好"},
  {"instruction": "第二条" "output": "坏"},
  {"instruction": "第三条", "output": "好"}
]
"""

BAD_LINE = (
    '{"instruction": "第一行", "output": "一"}\n'
    '{"instruction": "第二行", "output": "二"}\n'
    '{"instruction": "第三行", "output": "三"\n'
    '{"instruction": "第四行", "output": "四"}\n'
)

GBK_JSON = """[
  {"instruction": "用一句话介绍长城", "output": "长城是中国古代的军事防御工程。"},
  {"instruction": "写出三种水果", "output": "苹果、香蕉、橙子"}
]
"""

MISSING_OUTPUT = """[
  {"instruction": "第一条", "output": "有输出"},
  {"instruction": "第二条", "input": "没有输出"},
  {"instruction": "第三条", "output": "有输出"}
]
"""

EMPTY_INSTRUCTION = (
    '{"instruction": "正常", "output": "好"}\n'
    '{"instruction": "   ", "output": "指令只有空白"}\n'
    '{"instruction": "也正常", "output": "好"}\n'
)

LIST_INSTEAD_OF_STRING = """[
  {"instruction": "列出三种颜色", "output": ["红", "绿", "蓝"]},
  {"instruction": "列出三种颜色", "output": "红、绿、蓝"}
]
"""

NUMBER_INSTEAD_OF_STRING = (
    '{"instruction": 42, "output": "数字不是字符串"}\n'
    '{"instruction": "1+1=?", "output": 2}\n'
    '{"instruction": "1+2=?", "output": "3"}\n'
)

EXTRA_FIELDS = (
    '{"id": 1, "source": "belle", "instruction": "你好", "output": "你好！"}\n'
    '{"id": 2, "instruction": "谢谢", "output": "不客气。"}\n'
)

DUPLICATES = (
    '{"instruction": "天空是什么颜色？", "output": "蓝色"}\n'
    '{"instruction": "草是什么颜色？", "output": "绿色"}\n'
    '{"instruction": "雪是什么颜色？", "output": "白色"}\n'
    '{"instruction": "天空是什么颜色？", "output": "蓝色"}\n'
    '{"instruction": "  草是什么颜色？ ", "input": "", "output": "绿色\\n"}\n'
)

CONV_TWO_USER_TURNS = (
    '{"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}\n'
    '{"conversations": [{"from": "human", "value": "第一问"}, {"from": "human", "value": "第二问"},'
    ' {"from": "gpt", "value": "回答"}]}\n'
)

CONV_EMPTY_ASSISTANT = (
    '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}\n'
    '{"messages": [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "  "}]}\n'
)

CONV_UNKNOWN_ROLE = """[
  {"conversations": [{"from": "human", "value": "你好"}, {"from": "bot", "value": "你好！"}]},
  {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}
]
"""

CONV_ENDS_WITH_USER = (
    '{"messages": [{"role": "user", "content": "问题一"}, {"role": "assistant", "content": "回答一"},'
    ' {"role": "user", "content": "问题二"}]}\n'
    '{"messages": [{"role": "user", "content": "问题"}, {"role": "assistant", "content": "回答"}]}\n'
)

CONV_STARTS_WITH_ASSISTANT = (
    '{"conversations": [{"from": "gpt", "value": "我先说"}, {"from": "human", "value": "好"},'
    ' {"from": "gpt", "value": "嗯"}]}\n'
    '{"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}]}\n'
)

CONV_SYSTEM_NOT_FIRST = (
    '{"messages": [{"role": "user", "content": "问"}, {"role": "system", "content": "迟到的系统提示"},'
    ' {"role": "assistant", "content": "答"}]}\n'
    '{"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}\n'
)

CONV_BAD_TURNS = (
    '{"conversations": ["你好", {"from": "gpt", "value": "你好！"}]}\n'
    '{"conversations": [{"from": "human"}, {"from": "gpt", "value": "你好！"}]}\n'
    '{"conversations": [{"from": "human", "value": ["你", "好"]}, {"from": "gpt", "value": "你好！"}]}\n'
    '{"conversations": "你好"}\n'
    '{"conversations": []}\n'
    '{"conversations": [{"from": "human", "value": "好"}, {"from": "gpt", "value": "好", "weight": 1}]}\n'
)

MESSAGES_HUMAN_ROLE = (
    '{"messages": [{"role": "human", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}\n'
    '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}\n'
)

MIXED_FORMATS = (
    '{"instruction": "a1", "output": "o1"}\n'
    '{"conversations": [{"from": "human", "value": "s1"}, {"from": "gpt", "value": "r1"}]}\n'
    '{"instruction": "a2", "input": "i2", "output": "o2"}\n'
    '{"messages": [{"role": "user", "content": "m1"}, {"role": "assistant", "content": "r2"}]}\n'
    '{"conversations": [{"from": "human", "value": "s2"}, {"from": "gpt", "value": "r3"}]}\n'
    '{"instruction": "a3", "output": "o3"}\n'
)

NOT_AN_OBJECT = (
    '{"instruction": "正常", "output": "好"}\n'
    '"只是一个字符串"\n'
    "42\n"
    '[{"instruction": "在列表里", "output": "好"}]\n'
    '{"instruction": "也正常", "output": "好"}\n'
)

TOP_LEVEL_OBJECT = """{
  "data": [
    {"instruction": "你好", "output": "你好！"}
  ]
}
"""

NULL_FIELDS = """[
  {"instruction": "输入为空值", "input": null, "output": "保留，input 记为空串"},
  {"instruction": "输出为空值", "output": null},
  {"instruction": null, "output": "指令为空值"},
  {"instruction": "可选字段为空值", "output": "保留", "category": null, "system": null, "extra": null}
]
"""

UNKNOWN_FORMAT = (
    '{"question": "中国的首都是哪里？", "answer": "北京"}\n'
    '{"instruction": "中国的首都是哪里？", "output": "北京"}\n'
    "{}\n"
)

ALL_SKIPPED = (
    '{"instruction": "", "output": "空指令"}\n'
    "这一行不是 JSON\n"
    '{"instruction": "缺输出"}\n'
)

TRAILING_COMMA = """[
  {"instruction": "你好", "output": "你好！"},
]
"""

EXTRA_DATA_AFTER_ARRAY = """[
  {"instruction": "你好", "output": "你好！"}
]
[
  {"instruction": "再见", "output": "再见！"}
]
"""

BLANK_LINES = (
    '{"instruction": "第一行", "output": "一"}\n'
    "\n"
    '{"instruction": "第三行", "output": "三"}\n'
    "   \n"
    "\t\n"
    '{"instruction": "第六行", "output": "六"}\n'
    "\n"
)

CRLF = '{"instruction": "第一行", "output": "一"}\r\n{"instruction": "第二行", "output": "二"}\r\n'

UNSUPPORTED_CSV = "instruction,output\n你好,你好！\n"

# Issue 7 item 6: null means missing, whatever the format.
NULL_ONLY_FIELDS = (
    '{"instruction": null, "input": null, "output": null}\n'
    '{"conversations": null, "id": 3}\n'
    '{"instruction": "你好", "output": "你好！"}\n'
    '{"instruction": null, "output": null, "conversations": null}\n'
)

# Issue 7 item 7: a minified JSON array is one line, so records are named by index.
ONE_LINE_ARRAY = (
    '[{"instruction": "一", "output": "1"}, {"instruction": "二"}, {"instruction": "一", "output": "1"},'
    ' {"instruction": "三", "output": "3"}]'
)

# Issue 7 item 14: LLaMA-Factory's ShareGPT tool-call format (glaive_toolcall_zh_demo.json), plus broken turns.
TOOLCALL = r"""[
  {
    "conversations": [
      {"from": "human", "value": "帮我算一下 3 乘 4。"},
      {"from": "function_call", "value": "{\"name\": \"multiply\", \"arguments\": {\"a\": 3, \"b\": 4}}"},
      {"from": "observation", "value": "{\"result\": 12}"},
      {"from": "gpt", "value": "3 乘 4 等于 12。"}
    ],
    "tools": "[{\"name\": \"multiply\", \"description\": \"两数相乘\", \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"number\"}, \"b\": {\"type\": \"number\"}}, \"required\": [\"a\", \"b\"]}}]"
  },
  {
    "conversations": [
      {"from": "human", "value": "你好"},
      {"from": "gpt", "value": "你好！需要我帮你算点什么吗？"}
    ],
    "tools": "[{\"name\": \"multiply\", \"description\": \"两数相乘\", \"parameters\": {\"type\": \"object\", \"properties\": {}}}]"
  },
  {
    "conversations": [
      {"from": "human", "value": "讲个笑话"},
      {"from": "gpt", "value": "从前有座山……"}
    ],
    "tools": "[]"
  },
  {
    "conversations": [
      {"from": "human", "value": "查一下北京天气"},
      {"from": "gpt", "value": "好的，我来查询。"},
      {"from": "observation", "value": "{\"weather\": \"晴\"}"},
      {"from": "gpt", "value": "北京今天晴。"},
      {"from": "human", "value": "谢谢"},
      {"from": "gpt", "value": "不客气！"}
    ],
    "tools": "[{\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}]"
  },
  {
    "conversations": [
      {"from": "human", "value": "算 1 加 1"},
      {"from": "function_call", "value": "add(1, 1)"},
      {"from": "observation", "value": "2"},
      {"from": "gpt", "value": "等于 2。"}
    ],
    "tools": "[{\"name\": \"add\"}]"
  },
  {
    "conversations": [
      {"from": "observation", "value": "{}"},
      {"from": "gpt", "value": "没有问题。"}
    ],
    "tools": "[]"
  },
  {
    "conversations": [
      {"from": "human", "value": "你好"},
      {"from": "gpt", "value": "你好！"}
    ],
    "tools": "[{\"name\": \"broken\""
  }
]
"""

# OpenAI-style messages with tool_calls and tool results (two calls answered in parallel).
MESSAGES_TOOLS = (
    '{"messages": [{"role": "user", "content": "北京和上海哪里更热？"}, {"role": "assistant", "content": null,'
    ' "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"北京\\"}"}},'
    ' {"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"上海\\"}"}}]},'
    ' {"role": "tool", "content": "30"}, {"role": "tool", "content": "33"},'
    ' {"role": "assistant", "content": "上海更热。"}],'
    ' "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}\n'
    '{"messages": [{"role": "user", "content": "你好"}, {"role": "tool", "content": "30"},'
    ' {"role": "assistant", "content": "嗯"}]}\n'
)

# LLaMA-Factory's alpaca format with history and a system prompt.
ALPACA_HISTORY = """[
  {
    "instruction": "那上海呢？",
    "input": "",
    "output": "上海是中国的经济中心。",
    "system": "你是地理老师。",
    "history": [["北京是哪个国家的首都？", "北京是中国的首都。"], ["它有多少人口？", "约两千万。"]]
  },
  {"instruction": "你好", "output": "你好！", "history": [["只有一半"]]}
]
"""

# Belle multiturn_chat_0.8M: earlier turns live in the instruction text.
BELLE_MULTITURN = (
    '{"instruction": "Human:写一句春天的诗\\nAssistant:春风又绿江南岸。\\nHuman:再来一句\\nAssistant:", "input": "",'
    ' "output": "春眠不觉晓。"}\n'
    '{"instruction": "Human:只有一轮\\nAssistant:", "input": "", "output": "好的。"}\n'
    '{"instruction": "请解释 Human: 这个词", "input": "", "output": "它的意思是人类。"}\n'
)

# pCLUE ships JSON Lines in files named .json.
PCLUE = (
    '{"input": "这是关于哪方面的新闻？球队夺冠\\n选项：体育，财经\\n答案：", "target": "体育",'
    ' "answer_choices": ["体育", "财经"], "type": "classify"}\n'
    '{"input": "从上面的段落中产生一个问题：长江是中国最长的河流。", "target": "中国最长的河流是哪条？",'
    ' "type": "mrc"}\n'
    '{"input": "“下雨了”我们能推断“地面湿了”吗？是的,不是,或也许？\\n答案：", "target": "是的",'
    ' "answer_choices": "", "type": "nli"}\n'
    '{"input": "没有目标的任务", "target": null, "type": "generate"}\n'
)

XP3 = (
    '{"inputs": "把下面的句子翻译成英文：我爱你", "targets": "\\nI love you"}\n'
    '{"inputs": "1+1=?", "targets": "   "}\n'
)

# C-Eval style exam items with explanations (the SAMPLES helper's exam_explained_zh.jsonl).
EXAM_EXPLAINED = (
    '{"subject": "math", "question": "2+3=?", "A": "4", "B": "5", "C": "6", "D": "7", "answer": "B",'
    ' "explanation": "2 加 3 等于 5。"}\n'
    '{"subject": "physics", "question": "光速约为多少？", "A": "3e8 m/s", "B": "3e5 m/s", "C": "340 m/s",'
    ' "D": "1 m/s", "answer": "A", "explanation": ""}\n'
    '{"subject": "math", "question": "1+1=?", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "E"}\n'
    '{"subject": "math", "question": "2+2=?", "A": "4", "B": "5", "C": "6", "answer": "A"}\n'
)

# COIG exam_instructions.jsonl fields.
COIG_EXAM = (
    '{"textbox_q_instruction": "请回答下面的选择题。", "textbox_q_context": "", "textbox_question":'
    ' "中国的首都是？A. 上海 B. 北京", "textbox_answer": "B", "textbox_answer_analysis": "北京是首都。"}\n'
    '{"textbox_q_instruction": "", "textbox_q_context": "材料：水在 0 摄氏度结冰。", "textbox_question":'
    ' "水在几度结冰？", "textbox_answer": "0 摄氏度", "textbox_answer_analysis": ""}\n'
)

# Chain-of-thought with the rationale in its own field.
COT_FIELDS = (
    '{"question": "小明有 3 个苹果，又买了 2 个，现在有几个？", "rationale": "原有 3 个，加上 2 个，3+2=5。",'
    ' "answer": "5 个"}\n'
    '{"instruction": "计算 6 除以 2", "input": "", "chain_of_thought": "6 平均分成 2 份，每份 3。", "answer": "3"}\n'
    '{"question": "缺少答案", "rationale": "无"}\n'
)


def corpus() -> dict[str, bytes]:
    """Return {file name: exact bytes} for every corpus file."""
    texts = {
        "alpaca_ok.json": ALPACA_OK,
        "sharegpt_ok.json": SHAREGPT_OK,
        "messages_ok.jsonl": MESSAGES_OK,
        "bad_json_array.json": BAD_JSON_ARRAY,
        "bad_line.jsonl": BAD_LINE,
        "empty_array.json": "[]\n",
        "whitespace_only.jsonl": "  \n\n\t \n",
        "missing_output.json": MISSING_OUTPUT,
        "empty_instruction.jsonl": EMPTY_INSTRUCTION,
        "list_instead_of_string.json": LIST_INSTEAD_OF_STRING,
        "number_instead_of_string.jsonl": NUMBER_INSTEAD_OF_STRING,
        "extra_fields.jsonl": EXTRA_FIELDS,
        "duplicates.jsonl": DUPLICATES,
        "conv_two_user_turns.jsonl": CONV_TWO_USER_TURNS,
        "conv_empty_assistant.jsonl": CONV_EMPTY_ASSISTANT,
        "conv_unknown_role.json": CONV_UNKNOWN_ROLE,
        "conv_ends_with_user.jsonl": CONV_ENDS_WITH_USER,
        "conv_starts_with_assistant.jsonl": CONV_STARTS_WITH_ASSISTANT,
        "conv_system_not_first.jsonl": CONV_SYSTEM_NOT_FIRST,
        "conv_bad_turns.jsonl": CONV_BAD_TURNS,
        "messages_human_role.jsonl": MESSAGES_HUMAN_ROLE,
        "mixed_formats.jsonl": MIXED_FORMATS,
        "not_an_object.jsonl": NOT_AN_OBJECT,
        "top_level_object.json": TOP_LEVEL_OBJECT,
        "top_level_string.json": '"只是一个字符串"\n',
        "null_fields.json": NULL_FIELDS,
        "unknown_format.jsonl": UNKNOWN_FORMAT,
        "all_skipped.jsonl": ALL_SKIPPED,
        "trailing_comma.json": TRAILING_COMMA,
        "extra_data_after_array.json": EXTRA_DATA_AFTER_ARRAY,
        "crlf.jsonl": CRLF,
        "blank_lines.jsonl": BLANK_LINES,
        "unsupported.csv": UNSUPPORTED_CSV,
        "null_only_fields.jsonl": NULL_ONLY_FIELDS,
        "one_line_array.json": ONE_LINE_ARRAY,
        "toolcall_sharegpt.json": TOOLCALL,
        "messages_tools.jsonl": MESSAGES_TOOLS,
        "alpaca_history.json": ALPACA_HISTORY,
        "belle_multiturn.jsonl": BELLE_MULTITURN,
        "pclue.json": PCLUE,
        "xp3.jsonl": XP3,
        "exam_explained.jsonl": EXAM_EXPLAINED,
        "coig_exam.jsonl": COIG_EXAM,
        "cot_fields.jsonl": COT_FIELDS,
    }
    files = {name: text.encode("utf-8") for name, text in texts.items()}
    files.update(_encoding_cases())
    return files


def _encoding_cases() -> dict[str, bytes]:
    gbk = GBK_JSON.encode("gbk")
    # 0xE9 then '"' is invalid in both encodings: UTF-8 wants a continuation byte and
    # GB18030 wants a trail byte >= 0x30, so the loader has to give up with the offset.
    latin1 = '{"instruction": "café", "output": "ok"}\n'.encode("latin-1")
    return {
        "gbk.json": gbk,
        "bom.jsonl": BOM + BAD_LINE.replace('"三"\n', '"三"}\n').encode("utf-8"),
        "bom_not_utf8.jsonl": BOM + '{"instruction": "你好", "output": "好"}\n'.encode("gbk"),
        "latin1_garbage.jsonl": latin1,
        "empty.json": b"",
    }


def _self_check(files: dict[str, bytes]) -> None:
    # The encoding cases are only meaningful if the bytes really are what their names claim.
    try:
        files["gbk.json"].decode("utf-8")
        raise SystemExit("gbk.json accidentally decodes as UTF-8")
    except UnicodeDecodeError:
        pass
    for codec in ("utf-8", "gb18030"):
        try:
            files["latin1_garbage.jsonl"].decode(codec)
            raise SystemExit(f"latin1_garbage.jsonl accidentally decodes as {codec}")
        except UnicodeDecodeError:
            pass


def main() -> None:
    files = corpus()
    _self_check(files)
    for name, data in sorted(files.items()):
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE}")


if __name__ == "__main__":
    main()
