// Chat templates (tokenizer_config.json "chat_template") rendered by a small
// Jinja interpreter whose output matches Python jinja2 as transformers
// configures it: trim_blocks=True, lstrip_blocks=True, keep_trailing_newline
// =False, loopcontrols (break/continue), a tojson filter that neither escapes
// HTML nor non-ASCII, raise_exception(msg) and strftime_now(fmt) globals.
//
// Supported subset: see the comment at the top of ChatTemplate.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmc::text {

// A Jinja value. Lists, dicts and namespaces are shared (reference semantics,
// as in Python); dicts keep insertion order and have string keys.
struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };
  using List = std::vector<Value>;
  using Dict = std::vector<std::pair<std::string, Value>>;
  using Args = std::vector<Value>;
  using Kwargs = std::vector<std::pair<std::string, Value>>;
  using Function = std::function<Value(Args&, Kwargs&)>;

  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string s;  // String; for Undefined: the name that was looked up
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // Dict and Namespace
  std::shared_ptr<Function> fn;

  static Value undefined(std::string name = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value real(double v);
  static Value string(std::string v);
  static Value makeList(List v = {});
  static Value makeDict(Dict v = {});
  static Value function(Function f);
  static Value fromJson(const nlohmann::ordered_json& j);
  static Value fromJson(const nlohmann::json& j);

  bool isUndefined() const { return kind == Kind::Undefined; }
  bool truthy() const;
  // Dict/namespace lookup; nullptr when absent.
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);  // Dict/namespace insert-or-assign
};

// Rendering or template errors: syntax errors carry "line L, column C";
// raise_exception(msg) throws one whose what() is exactly msg.
class TemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ChatTemplate {
 public:
  // Parses the template; throws TemplateError on syntax errors.
  explicit ChatTemplate(const std::string& source);

  // Reads tokenizer_config.json; "chat_template" may be a string or a list of
  // {name, template} (the one named "default" is used). Throws
  // std::runtime_error when the file, the key or the default entry is missing.
  static ChatTemplate fromTokenizerConfig(const std::string& tokenizer_config_path);
  // The same from the parsed file (`path` names it in errors).
  static ChatTemplate fromTokenizerConfig(const nlohmann::ordered_json& tokenizer_config, const std::string& path);

  // Every top-level key of `context` becomes a template variable (messages,
  // tools, add_generation_prompt, bos_token, eos_token, ...). Use
  // ordered_json when key order matters (tojson keeps the given order;
  // nlohmann::json sorts object keys).
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& source() const { return source_; }

  struct Impl;

 private:
  std::string source_;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace llmc::text
