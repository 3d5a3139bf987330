#!/usr/bin/env python3
"""Renders test/text/chat_expected.json: reference chat-template outputs.

Usage: python3 test/text/make_chat_expected.py TOKENIZER_DIR > test/text/chat_expected.json
TOKENIZER_DIR is the directory test/text/fetch.sh fills (llama3, llama3_1,
llama3_2, qwen2_5, qwen3, qwen2; each with tokenizer_config.json).

The Jinja environment replicates transformers' chat-template renderer
(transformers/utils/chat_template_utils.py, _compile_jinja_template):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]) with a tojson filter that does not escape HTML or
non-ASCII, and the raise_exception / strftime_now globals. (transformers'
AssistantTracker extension only adds {% generation %}; none of these
templates use it.)
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = ["llama3", "llama3_1", "llama3_2", "qwen2_5", "qwen3", "qwen2"]


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def load_template(path):
    with open(path, encoding="utf-8") as f:
        t = json.load(f)["chat_template"]
    if isinstance(t, list):
        t = {x["name"]: x["template"] for x in t}["default"]
    return t


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. \"Paris\" or 'Zürich'"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["location"],
        },
    },
}
BASE = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "date_string": "26 Jul 2024"}
SYS = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "system_user": [SYS, {"role": "user", "content": "Hello!"}],
    "no_system": [{"role": "user", "content": "  What is 2+2?\n"}],
    "multi_turn": [SYS, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}],
    "unicode": [{"role": "user", "content": "Grüße 你好 🙂 \"quotes\" 'single' \\ back\\slash\t<tab> {{ not jinja }} {% raw %}"},
                {"role": "assistant", "content": "Ça va — naïve café ✓"}],
    "empty_message": [SYS, {"role": "user", "content": ""}],
    "thinking": [{"role": "user", "content": "Think."},
                 {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nAnswer."},
                 {"role": "user", "content": "Again."}],
    "tool_calls": [SYS, {"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {
                        "name": "get_current_weather",
                        "arguments": {"location": "Paris, France", "unit": "celsius"}}}]},
                   {"role": "tool", "content": "{\"temperature\": 22.5, \"sky\": \"clear\"}"},
                   {"role": "tool", "content": "second result"},
                   {"role": "assistant", "content": "It is 22.5 °C and clear."}],
}

CASES = []
for conv_name, msgs in CONVERSATIONS.items():
    for agp in (True, False):
        CASES.append((f"{conv_name}_agp{int(agp)}", dict(BASE, messages=msgs, add_generation_prompt=agp)))
CASES.append(("tools_system_user", dict(BASE, messages=CONVERSATIONS["system_user"],
                                        tools=[WEATHER_TOOL], add_generation_prompt=True)))
CASES.append(("tools_no_system", dict(BASE, messages=CONVERSATIONS["no_system"],
                                      tools=[WEATHER_TOOL], add_generation_prompt=True)))
CASES.append(("tools_tool_calls", dict(BASE, messages=CONVERSATIONS["tool_calls"],
                                       tools=[WEATHER_TOOL], add_generation_prompt=False)))
CASES.append(("thinking_disabled", dict(BASE, messages=CONVERSATIONS["system_user"],
                                        add_generation_prompt=True, enable_thinking=False)))


def main():
    d = sys.argv[1]
    env = make_env()
    out = {"templates": TEMPLATES, "cases": []}
    for tname in TEMPLATES:
        tmpl = env.from_string(load_template(f"{d}/{tname}/tokenizer_config.json"))
        for cname, ctx in CASES:
            out["cases"].append({"template": tname, "name": cname, "context": ctx,
                                 "expected": tmpl.render(**ctx)})
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
