// Chat templates: byte-identical output to Python jinja2 under transformers'
// settings. Env: LLMC_TOKENIZER_DIR (subdirs llama3, llama3_1, llama3_2, qwen2_5, qwen3,
// filled by test/text/fetch.sh) and LLMC_CHAT_EXPECTED
// (test/text/chat_expected.json, from test/text/make_chat_expected.py).
#include "runtime/text/ChatTemplate.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using llmc::text::ChatTemplate;
using llmc::text::TemplateError;
using ojson = nlohmann::ordered_json;

namespace {

std::string envOrFail(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) ADD_FAILURE() << name << " is not set";
  return v ? v : "";
}

TEST(ChatTemplate, RealTemplatesMatchJinja2) {
  std::string dir = envOrFail("LLMC_TOKENIZER_DIR");
  std::string expectedPath = envOrFail("LLMC_CHAT_EXPECTED");
  ASSERT_FALSE(dir.empty() || expectedPath.empty());
  std::ifstream f(expectedPath);
  ASSERT_TRUE(f) << "cannot open " << expectedPath;
  ojson exp = ojson::parse(f);
  std::map<std::string, ChatTemplate> templates;
  for (const auto& name : exp["templates"]) {
    std::string n = name.get<std::string>();
    templates.emplace(n, ChatTemplate::fromTokenizerConfig(dir + "/" + n + "/tokenizer_config.json"));
  }
  int count = 0;
  for (const auto& c : exp["cases"]) {
    std::string t = c["template"].get<std::string>(), name = c["name"].get<std::string>();
    std::string got;
    try {
      got = templates.at(t).render(c["context"]);
    } catch (const std::exception& e) {
      ADD_FAILURE() << t << "/" << name << ": " << e.what();
      continue;
    }
    EXPECT_EQ(got, c["expected"].get<std::string>()) << t << "/" << name;
    ++count;
  }
  EXPECT_GE(count, 6 * 18);
}

// Expected outputs made with python3 (jinja2 3.1.6) by:
//   env = make_env()  # from test/text/make_chat_expected.py
//   env.from_string(TEMPLATE).render(**CONTEXT)
// with CONTEXT = the kContext JSON below.
const char* kContext = R"JJ({"x": true, "xs": [1, 2, 3], "s": "hello", "d": {"a": 1, "b": "two"}, "obj": {"z": [1, {"y": null}], "a": "é\"\n", "n": 1.0, "e": [], "f": {}}, "objs": [{"t": "f", "n": "A"}, {"t": "g", "n": "B"}, {"t": "f", "n": "C"}]})JJ";
struct HandCase { const char* name; const char* tmpl; const char* expected; };
const HandCase kHandCases[] = {
    {"ws", R"JJ(a
  {% if x %}
  yes
  {% endif %}
b {{- ' c ' -}} d
{#- c -#}
 e{{ x }}
)JJ",
     R"JJ(a
  yes
b c deTrue)JJ"},
    {"loop", R"JJ({% for m in xs if m > 1 %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}{{ '|' if not loop.last }}{% if loop.first %}F{% endif %}{% else %}none{% endfor %};{% for a, b in d.items() %}{{ a }}={{ b }},{% endfor %};{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %};{% for x in [] %}x{% else %}E{% endfor %})JJ",
     R"JJ(1/0/2|F2/1/2;a=1,b=two,;02;E)JJ"},
    {"ns", R"JJ({% set ns = namespace(n=0, s='') %}{% for x in xs %}{% set ns.n = ns.n + x %}{% set ns.s = ns.s ~ x %}{% set local = x %}{% endfor %}{{ ns.n }} {{ ns.s }} [{{ local }}]{% set y = 5 %}{% if true %}{% set y = 6 %}{% endif %}{{ y }})JJ",
     R"JJ(6 123 []6)JJ"},
    {"expr", R"JJ({{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 1 + 2 * 3 }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-7 }} {{ 10 / 5 }} {{ [1, 'a', none, true] }} {{ {'k': 'v'} }} {{ 'x' if 0 else 'y' }} {{ none }} {{ True and 'z' }} {{ '' or 'w' }} {{ 3 in [1,2,3] }} {{ 'b' not in 'abc' }} {{ 1 < 2 <= 2 }} {{ s[1:] }} {{ s[::-1] }} {{ s[-2] }} {{ xs[1:3] }} {{ d['a'] }} {{ d.b }} {{ undefined_var }}|{{ undefined_var is defined }})JJ",
     R"JJ(3 -4 1 2 3.5 7 1024 ababab 2.5 0.30000000000000004 1e+20 1e-07 2.0 [1, 'a', None, True] {'k': 'v'} y None z w True False True ello olleh l [2, 3] 1 two |False)JJ"},
    {"tests", R"JJ({{ none is none }} {{ 's' is string }} {{ d is mapping }} {{ xs is iterable }} {{ 3 is number }} {{ x is not defined }} {{ 4 is divisibleby(2) }} {{ xs is sequence }} {{ 'a' is not string }} {{ false is false }})JJ",
     R"JJ(True True True True True False True True False True)JJ"},
    {"filters", R"JJ({{ '  hi  ' | trim }}|{{ xs | length }}|{{ 'aB' | upper }}{{ 'aB' | lower }}|{{ nope | default('dflt') }}|{{ '' | default('e', true) }}|{{ xs | first }}{{ xs | last }}|{{ xs | join(', ') }}|{{ 'aaa' | replace('a', 'b') }}|{{ 42 | string }}|{{ '12' | int + 1 }}|{{ objs | selectattr('t', 'equalto', 'f') | map(attribute='n') | join(',') }}|{{ objs | rejectattr('t', 'equalto', 'f') | list | length }}|{{ obj | tojson }}|{{ obj | tojson(indent=2) }}|{{ 'Zürich' | length }})JJ",
     R"JJ(hi|3|ABab|dflt|e|13|1, 2, 3|bbb|42|13|A,C|1|{"z": [1, {"y": null}], "a": "é\"\n", "n": 1.0, "e": [], "f": {}}|{
  "z": [
    1,
    {
      "y": null
    }
  ],
  "a": "é\"\n",
  "n": 1.0,
  "e": [],
  "f": {}
}|6)JJ"},
    {"methods", R"JJ({{ ' x '.strip() }}|{{ '\nx\n'.lstrip('\n') }}|{{ 'xyy'.rstrip('y') }}|{{ s.startswith('he') }}{{ s.endswith('lo') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a</think>b'.split('</think>')[-1] }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'Ab'.lower() }}{{ 'Ab'.upper() }}|{{ d.get('a') }}{{ d.get('zz', 'none') }}|{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %})JJ",
     R"JJ(x|x
|x|TrueTrue|['a', 'b', '', 'c']|['a', 'b']|b|bXb|abAB|1none|a1btwo)JJ"},
    {"literals", R"JJ({{ 'it\'s' }} {{ "q\"q" }} {{ 'tab\tnl\n' }} {{ '\u00e9' }} {{ -3 }} {{ 2.50 }} {{ True }} {{ [] }})JJ",
     R"JJ(it's q"q tab	nl
 é -3 2.5 True [])JJ"},
};

TEST(ChatTemplate, HandWrittenConstructs) {
  ojson ctx = ojson::parse(kContext);
  for (const auto& c : kHandCases) {
    try {
      EXPECT_EQ(ChatTemplate(c.tmpl).render(ctx), c.expected) << c.name;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": " << e.what();
    }
  }
}

TEST(ChatTemplate, RaiseException) {
  ChatTemplate t("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate!') }}{% endif %}ok");
  try {
    t.render(ojson::parse(R"({"messages": [{"role": "assistant", "content": "x"}]})"));
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "Conversation roles must alternate!");
  }
  EXPECT_EQ(t.render(ojson::parse(R"({"messages": [{"role": "user"}]})")), "ok");
}

void expectSyntaxError(const std::string& src, const std::string& where) {
  try {
    ChatTemplate t(src);
    ADD_FAILURE() << "no error for " << src;
  } catch (const TemplateError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("syntax error"), std::string::npos) << m;
    EXPECT_NE(m.find(where), std::string::npos) << m;
  }
}

TEST(ChatTemplate, SyntaxErrors) {
  expectSyntaxError("ab\n{% if x %}never closed", "line 2, column 23: unexpected end of template, expected 'endif'");
  expectSyntaxError("{{ 1 + }}", "line 1, column 8");
  expectSyntaxError("x\n  {{ 'abc }}", "line 2, column 6");
  expectSyntaxError("{% frobnicate %}", "line 1, column 4");
  expectSyntaxError("{{ a", "line 1, column 1");
}

TEST(ChatTemplate, RuntimeErrors) {
  EXPECT_THROW(ChatTemplate("{{ 'a' + 1 }}").render(ojson::object()), TemplateError);
  EXPECT_THROW(ChatTemplate("{{ x.y }}").render(ojson::object()), TemplateError);  // attribute of undefined
  EXPECT_EQ(ChatTemplate("[{{ x }}]{{ x | length }}{% for a in x %}a{% endfor %}").render(ojson::object()), "[]0");
}

TEST(ChatTemplate, TokenizerConfigErrors) {
  std::string p = ::testing::TempDir() + "/ct_config.json";
  { std::ofstream(p) << R"({"bos_token": "x"})"; }
  EXPECT_THROW(ChatTemplate::fromTokenizerConfig(p), std::runtime_error);
  { std::ofstream(p) << R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ 1 }}"}]})"; }
  EXPECT_EQ(ChatTemplate::fromTokenizerConfig(p).render(ojson::object()), "D1");
  { std::ofstream(p) << R"({"chat_template": [{"name": "tool_use", "template": "T"}]})"; }
  EXPECT_THROW(ChatTemplate::fromTokenizerConfig(p), std::runtime_error);
  EXPECT_THROW(ChatTemplate::fromTokenizerConfig(p + ".missing"), std::runtime_error);
}

}  // namespace
