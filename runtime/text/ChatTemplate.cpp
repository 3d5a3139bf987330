// Jinja subset for chat templates; output matches Python jinja2 under
// transformers' settings (trim_blocks, lstrip_blocks, loopcontrols, tojson
// with ensure_ascii=False, raise_exception, strftime_now).
//
// Supported: text, {{ }}, {% %}, {# #} with '-' / '+' whitespace control;
// if/elif/else, for (tuple targets, `if` filter, else, loop.index/index0/
// revindex/revindex0/first/last/length/previtem/nextitem), set (names,
// ns.attr, block set), break/continue, generation/endgeneration (body only);
// literals, lists, dicts, tuples (as lists), attribute/item access, slices,
// calls with keyword args, filters, tests, and/or/not, in/not in, comparisons,
// + - * / // % ** ~, unary -, conditional expressions.
// Not supported: macro/call/include/import/extends/block/raw/with/filter
// blocks, string % formatting, recursive loops.
#include "runtime/text/ChatTemplate.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <unordered_map>

namespace llmc::text {

// ---------------------------------------------------------------- Value
Value Value::undefined(std::string name) { Value v; v.kind = Kind::Undefined; v.s = std::move(name); return v; }
Value Value::none() { Value v; v.kind = Kind::None; return v; }
Value Value::boolean(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
Value Value::integer(int64_t x) { Value v; v.kind = Kind::Int; v.i = x; return v; }
Value Value::real(double x) { Value v; v.kind = Kind::Float; v.d = x; return v; }
Value Value::string(std::string x) { Value v; v.kind = Kind::String; v.s = std::move(x); return v; }
Value Value::makeList(List x) { Value v; v.kind = Kind::List; v.list = std::make_shared<List>(std::move(x)); return v; }
Value Value::makeDict(Dict x) { Value v; v.kind = Kind::Dict; v.dict = std::make_shared<Dict>(std::move(x)); return v; }
Value Value::function(Function f) { Value v; v.kind = Kind::Function; v.fn = std::make_shared<Function>(std::move(f)); return v; }

template <class J>
static Value fromJsonT(const J& j) {
  switch (j.type()) {
    case J::value_t::null: return Value::none();
    case J::value_t::boolean: return Value::boolean(j.template get<bool>());
    case J::value_t::number_integer: return Value::integer(j.template get<int64_t>());
    case J::value_t::number_unsigned: return Value::integer(static_cast<int64_t>(j.template get<uint64_t>()));
    case J::value_t::number_float: return Value::real(j.template get<double>());
    case J::value_t::string: return Value::string(j.template get<std::string>());
    case J::value_t::array: {
      Value::List l;
      for (const auto& e : j) l.push_back(fromJsonT(e));
      return Value::makeList(std::move(l));
    }
    case J::value_t::object: {
      Value::Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), fromJsonT(it.value()));
      return Value::makeDict(std::move(d));
    }
    default: return Value::none();
  }
}
Value Value::fromJson(const nlohmann::ordered_json& j) { return fromJsonT(j); }
Value Value::fromJson(const nlohmann::json& j) { return fromJsonT(j); }

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined: case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return d != 0;
    case Kind::String: return !s.empty();
    case Kind::List: return !list->empty();
    case Kind::Dict: return !dict->empty();
    default: return true;
  }
}
const Value* Value::find(const std::string& key) const {
  if ((kind != Kind::Dict && kind != Kind::Namespace) || !dict) return nullptr;
  for (auto& [k, v] : *dict) if (k == key) return &v;
  return nullptr;
}
void Value::set(const std::string& key, Value v) {
  for (auto& [k, x] : *dict) if (k == key) { x = std::move(v); return; }
  dict->emplace_back(key, std::move(v));
}

namespace {
using Kind = Value::Kind;

[[noreturn]] void fail(const std::string& m) { throw TemplateError(m); }

// ---------------------------------------------------------------- helpers
bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
std::string rstripWs(std::string s) { while (!s.empty() && isSpace(s.back())) s.pop_back(); return s; }
std::string lstripWs(const std::string& s) { size_t i = 0; while (i < s.size() && isSpace(s[i])) ++i; return s.substr(i); }
std::string stripChars(const std::string& s, const std::string* chars, bool left, bool right) {
  auto in = [&](char c) { return chars ? chars->find(c) != std::string::npos : isSpace(c); };
  size_t a = 0, b = s.size();
  if (left) while (a < b && in(s[a])) ++a;
  if (right) while (b > a && in(s[b - 1])) --b;
  return s.substr(a, b - a);
}
// Byte offsets of each code point, plus the end.
std::vector<size_t> cpOffsets(const std::string& s) {
  std::vector<size_t> o;
  for (size_t i = 0; i < s.size(); ++i) if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) o.push_back(i);
  o.push_back(s.size());
  return o;
}
void appendUtf8(std::string& o, uint32_t cp) {
  if (cp < 0x80) o += char(cp);
  else if (cp < 0x800) { o += char(0xC0 | (cp >> 6)); o += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { o += char(0xE0 | (cp >> 12)); o += char(0x80 | ((cp >> 6) & 0x3F)); o += char(0x80 | (cp & 0x3F)); }
  else { o += char(0xF0 | (cp >> 18)); o += char(0x80 | ((cp >> 12) & 0x3F)); o += char(0x80 | ((cp >> 6) & 0x3F)); o += char(0x80 | (cp & 0x3F)); }
}

std::string pyFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  size_t e = sci.find('e');
  int exp = std::stoi(sci.substr(e + 1));
  std::string mant = sci.substr(0, e);
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -5 + 1 && exp < 16) {  // -4 <= exp < 16: fixed
    if (exp < 0) {
      out += "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return out;
}

std::string pyRepr(const Value& v);
std::string pyStr(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.b ? "True" : "False";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return pyFloat(v.d);
    case Kind::String: return v.s;
    default: return pyRepr(v);
  }
}
std::string pyRepr(const Value& v) {
  switch (v.kind) {
    case Kind::String: {
      char q = (v.s.find('\'') != std::string::npos && v.s.find('"') == std::string::npos) ? '"' : '\'';
      std::string o(1, q);
      for (char c : v.s) {
        if (c == q || c == '\\') { o += '\\'; o += c; }
        else if (c == '\n') o += "\\n";
        else if (c == '\r') o += "\\r";
        else if (c == '\t') o += "\\t";
        else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) { char b[8]; std::snprintf(b, sizeof b, "\\x%02x", c); o += b; }
        else o += c;
      }
      return o + q;
    }
    case Kind::List: {
      std::string o = "[";
      for (size_t i = 0; i < v.list->size(); ++i) { if (i) o += ", "; o += pyRepr((*v.list)[i]); }
      return o + "]";
    }
    case Kind::Dict: {
      std::string o = "{";
      bool first = true;
      for (auto& [k, x] : *v.dict) { if (!first) o += ", "; first = false; o += pyRepr(Value::string(k)) + ": " + pyRepr(x); }
      return o + "}";
    }
    case Kind::Namespace: return "<Namespace>";
    case Kind::Function: return "<function>";
    default: return pyStr(v);
  }
}

void jsonString(std::string& o, const std::string& s) {
  o += '"';
  for (char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
        else o += c;
    }
  }
  o += '"';
}
struct JsonOpts { std::optional<std::string> indent; std::string itemSep = ", ", keySep = ": "; bool sortKeys = false; };
void toJson(std::string& o, const Value& v, const JsonOpts& opt, int level) {
  auto nl = [&](int lv) { if (opt.indent) { o += '\n'; for (int i = 0; i < lv; ++i) o += *opt.indent; } };
  switch (v.kind) {
    case Kind::None: o += "null"; break;
    case Kind::Bool: o += v.b ? "true" : "false"; break;
    case Kind::Int: o += std::to_string(v.i); break;
    case Kind::Float:
      if (std::isnan(v.d)) o += "NaN";
      else if (std::isinf(v.d)) o += v.d < 0 ? "-Infinity" : "Infinity";
      else o += pyFloat(v.d);
      break;
    case Kind::String: jsonString(o, v.s); break;
    case Kind::List: {
      if (v.list->empty()) { o += "[]"; break; }
      o += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) o += opt.itemSep;
        nl(level + 1);
        toJson(o, (*v.list)[i], opt, level + 1);
      }
      nl(level);
      o += ']';
      break;
    }
    case Kind::Dict: case Kind::Namespace: {
      if (v.dict->empty()) { o += "{}"; break; }
      std::vector<const std::pair<std::string, Value>*> items;
      for (auto& p : *v.dict) items.push_back(&p);
      if (opt.sortKeys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      o += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) o += opt.itemSep;
        nl(level + 1);
        jsonString(o, items[i]->first);
        o += opt.keySep;
        toJson(o, items[i]->second, opt, level + 1);
      }
      nl(level);
      o += '}';
      break;
    }
    case Kind::Undefined: fail("Object of type Undefined is not JSON serializable");
    default: fail("Object of type function is not JSON serializable");
  }
}

bool isNum(const Value& v) { return v.kind == Kind::Int || v.kind == Kind::Float || v.kind == Kind::Bool; }
double numD(const Value& v) { return v.kind == Kind::Float ? v.d : v.kind == Kind::Bool ? (v.b ? 1 : 0) : double(v.i); }
int64_t numI(const Value& v) { return v.kind == Kind::Bool ? (v.b ? 1 : 0) : v.i; }
const char* typeName(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined"; case Kind::None: return "NoneType"; case Kind::Bool: return "bool";
    case Kind::Int: return "int"; case Kind::Float: return "float"; case Kind::String: return "str";
    case Kind::List: return "list"; case Kind::Dict: return "dict"; case Kind::Namespace: return "Namespace";
    default: return "function";
  }
}
[[noreturn]] void undefinedError(const Value& v) {
  fail(v.s.empty() ? std::string("undefined value") : "'" + v.s + "' is undefined");
}

bool equals(const Value& a, const Value& b) {
  if (isNum(a) && isNum(b)) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return numD(a) == numD(b);
    return numI(a) == numI(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined: case Kind::None: return true;
    case Kind::String: return a.s == b.s;
    case Kind::List:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i) if (!equals((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case Kind::Dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (auto& [k, v] : *a.dict) { const Value* o = b.find(k); if (!o || !equals(v, *o)) return false; }
      return true;
    default: return a.dict == b.dict && a.fn == b.fn;
  }
}
int compare(const Value& a, const Value& b, const char* op) {
  if (isNum(a) && isNum(b)) { double x = numD(a), y = numD(b); return x < y ? -1 : x > y ? 1 : 0; }
  if (a.kind == Kind::String && b.kind == Kind::String) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  if (a.kind == Kind::List && b.kind == Kind::List) {
    for (size_t i = 0; i < a.list->size() && i < b.list->size(); ++i)
      if (!equals((*a.list)[i], (*b.list)[i])) return compare((*a.list)[i], (*b.list)[i], op);
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  if (a.isUndefined()) undefinedError(a);
  if (b.isUndefined()) undefinedError(b);
  fail(std::string("'") + op + "' not supported between instances of '" + typeName(a) + "' and '" + typeName(b) + "'");
}
bool contains(const Value& hay, const Value& needle) {
  switch (hay.kind) {
    case Kind::String:
      if (needle.kind != Kind::String) fail("'in <string>' requires string as left operand");
      return hay.s.find(needle.s) != std::string::npos;
    case Kind::List: for (auto& x : *hay.list) if (equals(x, needle)) return true; return false;
    case Kind::Dict: return needle.kind == Kind::String && hay.find(needle.s) != nullptr;
    case Kind::Undefined: return false;
    default: fail(std::string("argument of type '") + typeName(hay) + "' is not iterable");
  }
}
std::vector<Value> iterate(const Value& v) {
  switch (v.kind) {
    case Kind::List: return *v.list;
    case Kind::Dict: { std::vector<Value> r; for (auto& p : *v.dict) r.push_back(Value::string(p.first)); return r; }
    case Kind::String: {
      auto o = cpOffsets(v.s); std::vector<Value> r;
      for (size_t i = 0; i + 1 < o.size(); ++i) r.push_back(Value::string(v.s.substr(o[i], o[i + 1] - o[i])));
      return r;
    }
    case Kind::Undefined: return {};
    default: fail(std::string("'") + typeName(v) + "' object is not iterable");
  }
}
int64_t length(const Value& v) {
  switch (v.kind) {
    case Kind::String: return int64_t(cpOffsets(v.s).size()) - 1;
    case Kind::List: return int64_t(v.list->size());
    case Kind::Dict: case Kind::Namespace: return int64_t(v.dict->size());
    case Kind::Undefined: return 0;
    default: fail(std::string("object of type '") + typeName(v) + "' has no len()");
  }
}
Value items(const Value& v) {
  if (v.isUndefined()) return Value::makeList();
  if (v.kind != Kind::Dict) fail("items() requires a mapping");
  Value::List l;
  for (auto& [k, x] : *v.dict) l.push_back(Value::makeList({Value::string(k), x}));
  return Value::makeList(std::move(l));
}

const Value* kwarg(Value::Kwargs& kw, const char* name) {
  for (auto& [k, v] : kw) if (k == name) return &v;
  return nullptr;
}
const Value* arg(Value::Args& a, Value::Kwargs& kw, size_t i, const char* name) {
  if (i < a.size()) return &a[i];
  return kwarg(kw, name);
}

std::vector<std::string> pySplit(const std::string& s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> r;
  if (!sep) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && isSpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && int64_t(r.size()) == maxsplit) { r.push_back(rstripWs(s.substr(i))); break; }
      size_t j = i; while (j < s.size() && !isSpace(s[j])) ++j;
      r.push_back(s.substr(i, j - i)); i = j;
    }
    return r;
  }
  if (sep->empty()) fail("empty separator");
  size_t i = 0;
  while (true) {
    size_t j = s.find(*sep, i);
    if (j == std::string::npos || (maxsplit >= 0 && int64_t(r.size()) == maxsplit)) { r.push_back(s.substr(i)); break; }
    r.push_back(s.substr(i, j - i)); i = j + sep->size();
  }
  return r;
}
std::string replaceAll(const std::string& s, const std::string& a, const std::string& b, int64_t count) {
  std::string o; size_t i = 0; int64_t n = 0;
  if (a.empty()) {  // Python inserts b between every code point
    auto off = cpOffsets(s);
    for (size_t k = 0; k + 1 < off.size(); ++k) { if (count < 0 || n < count) { o += b; ++n; } o += s.substr(off[k], off[k + 1] - off[k]); }
    if (count < 0 || n < count) o += b;
    return o;
  }
  while (true) {
    size_t j = s.find(a, i);
    if (j == std::string::npos || (count >= 0 && n >= count)) { o += s.substr(i); break; }
    o += s.substr(i, j - i) + b; i = j + a.size(); ++n;
  }
  return o;
}
std::string lowerStr(std::string s) { for (auto& c : s) if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a'); return s; }
std::string upperStr(std::string s) { for (auto& c : s) if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A'); return s; }

Value stringMethod(const Value& self, const std::string& name) {
  std::string s = self.s;
  auto strArg = [](Value::Args& a, Value::Kwargs& kw, size_t i, const char* n) -> const std::string* {
    const Value* v = arg(a, kw, i, n);
    if (!v || v->kind == Kind::None) return nullptr;
    if (v->kind != Kind::String) fail(std::string("argument must be str, not ") + typeName(*v));
    return &v->s;
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return Value::function([s, name, strArg](Value::Args& a, Value::Kwargs& kw) {
      return Value::string(stripChars(s, strArg(a, kw, 0, "chars"), name != "rstrip", name != "lstrip"));
    });
  if (name == "startswith" || name == "endswith")
    return Value::function([s, name](Value::Args& a, Value::Kwargs&) {
      if (a.empty()) fail(name + "() takes at least 1 argument");
      std::vector<std::string> pre;
      if (a[0].kind == Kind::List) { for (auto& x : *a[0].list) pre.push_back(x.s); }
      else if (a[0].kind == Kind::String) pre.push_back(a[0].s);
      else fail(name + " first arg must be str or a tuple of str");
      for (auto& p : pre) {
        if (p.size() > s.size()) continue;
        if (name == "startswith" ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0) return Value::boolean(true);
      }
      return Value::boolean(false);
    });
  if (name == "split")
    return Value::function([s, strArg](Value::Args& a, Value::Kwargs& kw) {
      const Value* m = arg(a, kw, 1, "maxsplit");
      Value::List l;
      for (auto& x : pySplit(s, strArg(a, kw, 0, "sep"), m ? numI(*m) : -1)) l.push_back(Value::string(x));
      return Value::makeList(std::move(l));
    });
  if (name == "replace")
    return Value::function([s, strArg](Value::Args& a, Value::Kwargs& kw) {
      const std::string* x = strArg(a, kw, 0, "old"); const std::string* y = strArg(a, kw, 1, "new");
      if (!x || !y) fail("replace() takes at least 2 arguments");
      const Value* c = arg(a, kw, 2, "count");
      return Value::string(replaceAll(s, *x, *y, c ? numI(*c) : -1));
    });
  if (name == "lower") return Value::function([s](Value::Args&, Value::Kwargs&) { return Value::string(lowerStr(s)); });
  if (name == "upper") return Value::function([s](Value::Args&, Value::Kwargs&) { return Value::string(upperStr(s)); });
  if (name == "find")
    return Value::function([s, strArg](Value::Args& a, Value::Kwargs& kw) {
      const std::string* x = strArg(a, kw, 0, "sub");
      if (!x) fail("find() takes at least 1 argument");
      size_t p = s.find(*x);
      return Value::integer(p == std::string::npos ? -1 : int64_t(cpOffsets(s.substr(0, p)).size()) - 1);
    });
  return Value::undefined("str object has no attribute " + name);
}
Value dictMethod(const Value& self, const std::string& name) {
  if (name == "items") return Value::function([self](Value::Args&, Value::Kwargs&) { return items(self); });
  if (name == "keys")
    return Value::function([self](Value::Args&, Value::Kwargs&) { return Value::makeList(iterate(self)); });
  if (name == "values")
    return Value::function([self](Value::Args&, Value::Kwargs&) {
      Value::List l; for (auto& p : *self.dict) l.push_back(p.second); return Value::makeList(std::move(l));
    });
  if (name == "get")
    return Value::function([self](Value::Args& a, Value::Kwargs&) {
      if (a.empty()) fail("get expected at least 1 argument");
      const Value* v = a[0].kind == Kind::String ? self.find(a[0].s) : nullptr;
      return v ? *v : a.size() > 1 ? a[1] : Value::none();
    });
  return Value::undefined();
}

// a.name (jinja getattr: attribute first, then item)
Value getAttr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::Undefined: undefinedError(obj);
    case Kind::String: { Value m = stringMethod(obj, name); if (!m.isUndefined()) return m; break; }
    case Kind::Dict: {
      Value m = dictMethod(obj, name);
      if (!m.isUndefined()) return m;
      if (const Value* v = obj.find(name)) return *v;
      break;
    }
    case Kind::Namespace: if (const Value* v = obj.find(name)) return *v; break;
    default: break;
  }
  return Value::undefined(std::string("'") + typeName(obj) + " object' has no attribute '" + name + "'");
}
// a[key] (jinja getitem: item first, then attribute)
Value getItem(const Value& obj, const Value& key) {
  if (obj.kind == Kind::Undefined) undefinedError(obj);
  if (obj.kind == Kind::List && (key.kind == Kind::Int || key.kind == Kind::Bool)) {
    int64_t n = int64_t(obj.list->size()), i = numI(key);
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined(std::string("list object has no element ") + std::to_string(numI(key)));
    return (*obj.list)[size_t(i)];
  }
  if (obj.kind == Kind::String && (key.kind == Kind::Int || key.kind == Kind::Bool)) {
    auto off = cpOffsets(obj.s);
    int64_t n = int64_t(off.size()) - 1, i = numI(key);
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined("string index out of range");
    return Value::string(obj.s.substr(off[size_t(i)], off[size_t(i) + 1] - off[size_t(i)]));
  }
  if (obj.kind == Kind::Dict || obj.kind == Kind::Namespace) {
    if (key.kind == Kind::String) {
      if (const Value* v = obj.find(key.s)) return *v;
      if (obj.kind == Kind::Dict) { Value m = dictMethod(obj, key.s); if (!m.isUndefined()) return m; }
    }
    return Value::undefined(std::string("'dict object' has no attribute '") + pyStr(key) + "'");
  }
  if (key.kind == Kind::String) return getAttr(obj, key.s);
  return Value::undefined();
}
Value slice(const Value& obj, const Value& a, const Value& b, const Value& c) {
  auto opt = [](const Value& v) -> std::optional<int64_t> {
    if (v.kind == Kind::None || v.kind == Kind::Undefined) return std::nullopt;
    if (v.kind != Kind::Int && v.kind != Kind::Bool) fail("slice indices must be integers or None");
    return numI(v);
  };
  int64_t step = opt(c).value_or(1);
  if (step == 0) fail("slice step cannot be zero");
  std::vector<Value> elems;
  std::vector<size_t> off;
  int64_t n;
  if (obj.kind == Kind::List) n = int64_t(obj.list->size());
  else if (obj.kind == Kind::String) { off = cpOffsets(obj.s); n = int64_t(off.size()) - 1; }
  else if (obj.kind == Kind::Undefined) undefinedError(obj);
  else fail(std::string("'") + typeName(obj) + "' object is not subscriptable");
  auto norm = [&](std::optional<int64_t> x, int64_t dflt, int64_t lo, int64_t hi) {
    if (!x) return dflt;
    int64_t v = *x < 0 ? *x + n : *x;
    return std::clamp(v, lo, hi);
  };
  int64_t start, stop;
  if (step > 0) { start = norm(opt(a), 0, 0, n); stop = norm(opt(b), n, 0, n); }
  else { start = norm(opt(a), n - 1, -1, n - 1); stop = norm(opt(b), -1, -1, n - 1); }
  std::vector<int64_t> idx;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) idx.push_back(i);
  if (obj.kind == Kind::List) {
    Value::List l; for (auto i : idx) l.push_back((*obj.list)[size_t(i)]); return Value::makeList(std::move(l));
  }
  std::string s; for (auto i : idx) s += obj.s.substr(off[size_t(i)], off[size_t(i) + 1] - off[size_t(i)]);
  return Value::string(s);
}

// ---------------------------------------------------------------- lexer
enum class T { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Str, Int, Float, Op, Eof };
struct Token { T type; std::string text; int line, col; };

struct Lexer {
  const std::string& src;
  std::vector<Token> toks;
  explicit Lexer(const std::string& s) : src(s) {}

  std::pair<int, int> lc(size_t pos) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < pos && i < src.size(); ++i) { if (src[i] == '\n') { ++line; col = 1; } else ++col; }
    return {line, col};
  }
  [[noreturn]] void err(size_t pos, const std::string& m) const {
    auto [l, c] = lc(pos);
    fail("chat template syntax error at line " + std::to_string(l) + ", column " + std::to_string(c) + ": " + m);
  }
  void push(T t, std::string text, size_t pos) { auto [l, c] = lc(pos); toks.push_back({t, std::move(text), l, c}); }

  void run() {
    size_t pos = 0;
    bool stripLeading = false;
    while (true) {
      size_t p = pos;
      while (true) {
        p = src.find('{', p);
        if (p == std::string::npos || p + 1 >= src.size()) { p = std::string::npos; break; }
        char k = src[p + 1];
        if (k == '{' || k == '%' || k == '#') break;
        ++p;
      }
      std::string text = src.substr(pos, p == std::string::npos ? std::string::npos : p - pos);
      bool lineStarting = pos == 0 || src[pos - 1] == '\n';
      if (stripLeading) { size_t before = text.size(); text = lstripWs(text); if (text.size() != before) lineStarting = false; stripLeading = false; }
      if (p == std::string::npos) { if (!text.empty()) push(T::Text, text, pos); break; }
      char kind = src[p + 1];
      char ctl = p + 2 < src.size() ? src[p + 2] : 0;
      if (ctl == '-') text = rstripWs(text);
      else if (ctl != '+' && kind != '{') {
        size_t nl = text.rfind('\n');
        size_t l = nl == std::string::npos ? 0 : nl + 1;
        if (nl != std::string::npos || lineStarting) {
          bool ws = true;
          for (size_t i = l; i < text.size(); ++i) if (!isSpace(text[i])) { ws = false; break; }
          if (ws) text.resize(l);
        }
      }
      if (!text.empty()) push(T::Text, text, pos);
      size_t q = p + 2 + ((ctl == '-' || ctl == '+') ? 1 : 0);
      if (kind == '#') {
        size_t e = src.find("#}", q);
        if (e == std::string::npos) err(p, "unterminated comment");
        bool minus = e > q && src[e - 1] == '-';
        pos = e + 2;
        if (minus) stripLeading = true;
        else if (pos < src.size() && src[pos] == '\n') ++pos;
        continue;
      }
      push(kind == '{' ? T::VarBegin : T::BlockBegin, "", p);
      pos = lexTag(q, kind == '{' ? '}' : '%', stripLeading, p);
    }
    push(T::Eof, "", src.size());
  }

  // Lexes expression tokens up to the tag end; returns the position after it.
  size_t lexTag(size_t i, char endc, bool& stripLeading, size_t tagStart) {
    while (true) {
      while (i < src.size() && isSpace(src[i])) ++i;
      if (i >= src.size()) err(tagStart, endc == '}' ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      bool minus = src[i] == '-' && i + 2 < src.size() + 0 && src[i + 1] == endc && src[i + 2] == '}';
      if (minus || (src[i] == endc && i + 1 < src.size() && src[i + 1] == '}')) {
        push(endc == '}' ? T::VarEnd : T::BlockEnd, "", i);
        i += minus ? 3 : 2;
        if (minus) stripLeading = true;
        else if (endc == '%' && i < src.size() && src[i] == '\n') ++i;
        return i;
      }
      char c = src[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i; while (j < src.size() && (std::isalnum(static_cast<unsigned char>(src[j])) || src[j] == '_')) ++j;
        push(T::Name, src.substr(i, j - i), i); i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t j = i; bool fl = false;
        while (j < src.size() && (std::isdigit(static_cast<unsigned char>(src[j])) || src[j] == '_')) ++j;
        if (j + 1 < src.size() && src[j] == '.' && std::isdigit(static_cast<unsigned char>(src[j + 1]))) {
          fl = true; ++j; while (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j]))) ++j;
        }
        if (j < src.size() && (src[j] == 'e' || src[j] == 'E')) {
          size_t k = j + 1; if (k < src.size() && (src[k] == '+' || src[k] == '-')) ++k;
          if (k < src.size() && std::isdigit(static_cast<unsigned char>(src[k]))) { fl = true; j = k; while (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j]))) ++j; }
        }
        std::string num; for (size_t k = i; k < j; ++k) if (src[k] != '_') num += src[k];
        push(fl ? T::Float : T::Int, num, i); i = j;
      } else if (c == '\'' || c == '"') {
        std::string s; size_t j = i + 1;
        while (true) {
          if (j >= src.size()) err(i, "unterminated string");
          char d = src[j];
          if (d == c) break;
          if (d == '\\' && j + 1 < src.size()) {
            char e = src[j + 1]; j += 2;
            switch (e) {
              case 'n': s += '\n'; break; case 't': s += '\t'; break; case 'r': s += '\r'; break;
              case '\\': s += '\\'; break; case '\'': s += '\''; break; case '"': s += '"'; break;
              case '0': s += '\0'; break; case 'a': s += '\a'; break; case 'b': s += '\b'; break;
              case 'f': s += '\f'; break; case 'v': s += '\v'; break; case '\n': break;
              case 'x': case 'u': case 'U': {
                size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                if (j + n > src.size()) err(j, "truncated escape");
                appendUtf8(s, uint32_t(std::stoul(src.substr(j, n), nullptr, 16))); j += n; break;
              }
              default: s += '\\'; s += e;
            }
            continue;
          }
          s += d; ++j;
        }
        push(T::Str, s, i); i = j + 1;
      } else {
        static const char* ops2[] = {"//", "**", "==", "!=", "<=", ">="};
        bool done = false;
        for (auto* o : ops2) if (src.compare(i, 2, o) == 0) { push(T::Op, o, i); i += 2; done = true; break; }
        if (done) continue;
        if (std::string("+-*/%~<>()[]{},.:|=").find(c) == std::string::npos) err(i, std::string("unexpected char '") + c + "'");
        push(T::Op, std::string(1, c), i); ++i;
      }
    }
  }
};

// ---------------------------------------------------------------- AST
struct Expr;
using ExprP = std::shared_ptr<Expr>;
enum class E { Lit, Name, Attr, Item, Slice, Call, Filter, Test, Neg, Pos, Not, And, Or, Bin, Cmp, Cond, List, Dict };
struct Expr {
  E kind;
  Value lit;
  std::string name;  // name / attr / filter / test / operator
  std::vector<ExprP> kids;  // operands / args / slice parts (nullptr allowed)
  std::vector<std::pair<std::string, ExprP>> kwargs;
  bool negated = false;
  int line = 0, col = 0;
};

struct Node;
using Body = std::vector<std::shared_ptr<Node>>;
enum class N { Text, Out, If, For, Set, SetBlock, Break, Continue, Scope };
struct Node {
  N kind;
  std::string text;
  ExprP expr;           // Out / Set value / For iterable
  ExprP cond;           // For filter
  std::vector<std::pair<ExprP, Body>> branches;  // If
  Body body, elseBody;  // For / SetBlock / Scope; else of If/For
  std::vector<std::string> targets;  // For / Set (name, attr)
  std::string attr;     // Set ns.attr
};

struct Parser {
  const std::vector<Token>& t;
  size_t p = 0;
  explicit Parser(const std::vector<Token>& toks) : t(toks) {}

  [[noreturn]] void err(const Token& k, const std::string& m) const {
    fail("chat template syntax error at line " + std::to_string(k.line) + ", column " + std::to_string(k.col) + ": " + m);
  }
  const Token& cur() const { return t[p]; }
  bool isOp(const char* o) const { return cur().type == T::Op && cur().text == o; }
  bool isName(const char* n) const { return cur().type == T::Name && cur().text == n; }
  void expectOp(const char* o) { if (!isOp(o)) err(cur(), std::string("expected '") + o + "'" + got()); ++p; }
  std::string got() const {
    const Token& k = cur();
    switch (k.type) {
      case T::VarEnd: return ", got '}}'"; case T::BlockEnd: return ", got '%}'"; case T::Eof: return ", got end of template";
      default: return ", got '" + k.text + "'";
    }
  }
  std::string expectName() { if (cur().type != T::Name) err(cur(), "expected a name" + got()); return t[p++].text; }
  ExprP mk(E k, const Token& at) { auto e = std::make_shared<Expr>(); e->kind = k; e->line = at.line; e->col = at.col; return e; }

  // ---- statements
  Body parseBody(const std::vector<std::string>& ends, std::string* endTag) {
    Body body;
    while (true) {
      const Token& k = cur();
      if (k.type == T::Eof) {
        if (!ends.empty()) err(k, "unexpected end of template, expected '" + ends.back() + "'");
        return body;
      }
      if (k.type == T::Text) { auto n = std::make_shared<Node>(); n->kind = N::Text; n->text = k.text; body.push_back(n); ++p; continue; }
      if (k.type == T::VarBegin) {
        ++p;
        auto n = std::make_shared<Node>(); n->kind = N::Out; n->expr = parseExpr();
        if (cur().type != T::VarEnd) err(cur(), "expected '}}'" + got());
        ++p; body.push_back(n); continue;
      }
      // block
      ++p;
      const Token& kw = cur();
      if (kw.type != T::Name) err(kw, "expected a statement name" + got());
      if (std::find(ends.begin(), ends.end(), kw.text) != ends.end()) { *endTag = kw.text; ++p; return body; }
      body.push_back(parseStatement());
    }
  }
  void endBlock() { if (cur().type != T::BlockEnd) err(cur(), "expected '%}'" + got()); ++p; }

  std::shared_ptr<Node> parseStatement() {
    const Token& kw = cur();
    std::string s = kw.text;
    ++p;
    auto n = std::make_shared<Node>();
    if (s == "if") {
      n->kind = N::If;
      ExprP c = parseExpr(); endBlock();
      while (true) {
        std::string end;
        Body b = parseBody({"elif", "else", "endif"}, &end);
        n->branches.emplace_back(c, std::move(b));
        if (end == "elif") { c = parseExpr(); endBlock(); continue; }
        if (end == "else") { endBlock(); std::string e2; n->elseBody = parseBody({"endif"}, &e2); }
        endBlock();
        break;
      }
    } else if (s == "for") {
      n->kind = N::For;
      bool paren = isOp("(");
      if (paren) ++p;
      n->targets.push_back(expectName());
      while (isOp(",")) { ++p; n->targets.push_back(expectName()); }
      if (paren) expectOp(")");
      if (!isName("in")) err(cur(), "expected 'in'" + got());
      ++p;
      n->expr = parseOr(false);  // no conditional expression: `if` filters
      if (isName("if")) { ++p; n->cond = parseExpr(); }
      if (isName("recursive")) err(cur(), "recursive loops are not supported");
      endBlock();
      std::string end;
      n->body = parseBody({"else", "endfor"}, &end);
      if (end == "else") { endBlock(); n->elseBody = parseBody({"endfor"}, &end); }
      endBlock();
    } else if (s == "set") {
      n->targets.push_back(expectName());
      if (isOp(".")) { ++p; n->attr = expectName(); }
      if (isOp("=")) {
        ++p; n->kind = N::Set; n->expr = parseExpr(); endBlock();
      } else {
        if (!n->attr.empty()) err(cur(), "expected '='" + got());
        n->kind = N::SetBlock;
        endBlock();
        std::string end;
        n->body = parseBody({"endset"}, &end);
        endBlock();
      }
    } else if (s == "break" || s == "continue") {
      n->kind = s == "break" ? N::Break : N::Continue; endBlock();
    } else if (s == "generation") {
      n->kind = N::Scope; endBlock();
      std::string end; n->body = parseBody({"endgeneration"}, &end); endBlock();
    } else {
      err(kw, "unknown or unsupported tag '" + s + "'");
    }
    return n;
  }

  // ---- expressions
  ExprP parseExpr() {
    ExprP e = parseOr(true);
    return e;
  }
  ExprP parseCond(ExprP e) {
    while (isName("if")) {
      const Token& at = cur(); ++p;
      auto c = mk(E::Cond, at);
      ExprP test = parseOr(false);
      ExprP other;
      if (isName("else")) { ++p; other = parseOr(true); }
      c->kids = {test, e, other};
      e = c;
    }
    return e;
  }
  ExprP parseOr(bool withCond) {
    ExprP l = parseAnd();
    while (isName("or")) { const Token& at = cur(); ++p; auto e = mk(E::Or, at); e->kids = {l, parseAnd()}; l = e; }
    return withCond ? parseCond(l) : l;
  }
  ExprP parseAnd() {
    ExprP l = parseNot();
    while (isName("and")) { const Token& at = cur(); ++p; auto e = mk(E::And, at); e->kids = {l, parseNot()}; l = e; }
    return l;
  }
  ExprP parseNot() {
    if (isName("not")) { const Token& at = cur(); ++p; auto e = mk(E::Not, at); e->kids = {parseNot()}; return e; }
    return parseCompare();
  }
  ExprP parseCompare() {
    ExprP l = parseMath1();
    while (true) {
      const Token& at = cur();
      std::string op;
      if (cur().type == T::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" || cur().text == "<=" || cur().text == ">=")) { op = cur().text; ++p; }
      else if (isName("in")) { op = "in"; ++p; }
      else if (isName("not") && t[p + 1].type == T::Name && t[p + 1].text == "in") { op = "notin"; p += 2; }
      else break;
      auto e = mk(E::Cmp, at); e->name = op; e->kids = {l, parseMath1()}; l = e;
    }
    return l;
  }
  ExprP bin(const std::string& op, ExprP l, ExprP r, const Token& at) { auto e = mk(E::Bin, at); e->name = op; e->kids = {l, r}; return e; }
  ExprP parseMath1() {
    ExprP l = parseConcat();
    while (isOp("+") || isOp("-")) { const Token& at = cur(); std::string op = at.text; ++p; l = bin(op, l, parseConcat(), at); }
    return l;
  }
  ExprP parseConcat() {
    ExprP l = parseMath2();
    while (isOp("~")) { const Token& at = cur(); ++p; l = bin("~", l, parseMath2(), at); }
    return l;
  }
  ExprP parseMath2() {
    ExprP l = parsePow();
    while (isOp("*") || isOp("/") || isOp("//") || isOp("%")) { const Token& at = cur(); std::string op = at.text; ++p; l = bin(op, l, parsePow(), at); }
    return l;
  }
  ExprP parsePow() {
    ExprP l = parseUnary(true);
    while (isOp("**")) { const Token& at = cur(); ++p; l = bin("**", l, parseUnary(true), at); }
    return l;
  }
  ExprP parseUnary(bool withFilter) {
    ExprP e;
    const Token& at = cur();
    if (isOp("-") || isOp("+")) {
      ++p; e = mk(at.text == "-" ? E::Neg : E::Pos, at); e->kids = {parseUnary(false)};
    } else {
      e = parsePostfix(parsePrimary());
    }
    if (withFilter) e = parseFilterTest(e);
    return e;
  }
  ExprP parsePrimary() {
    const Token& k = cur();
    switch (k.type) {
      case T::Name: {
        ++p;
        if (k.text == "true" || k.text == "True") { auto e = mk(E::Lit, k); e->lit = Value::boolean(true); return e; }
        if (k.text == "false" || k.text == "False") { auto e = mk(E::Lit, k); e->lit = Value::boolean(false); return e; }
        if (k.text == "none" || k.text == "None") { auto e = mk(E::Lit, k); e->lit = Value::none(); return e; }
        auto e = mk(E::Name, k); e->name = k.text; return e;
      }
      case T::Str: {
        std::string s = k.text; ++p;
        while (cur().type == T::Str) { s += cur().text; ++p; }  // implicit concatenation
        auto e = mk(E::Lit, k); e->lit = Value::string(s); return e;
      }
      case T::Int: { ++p; auto e = mk(E::Lit, k); e->lit = Value::integer(std::stoll(k.text)); return e; }
      case T::Float: { ++p; auto e = mk(E::Lit, k); e->lit = Value::real(std::stod(k.text)); return e; }
      case T::Op:
        if (k.text == "(") {
          ++p;
          if (isOp(")")) { ++p; return mk(E::List, k); }
          ExprP first = parseExpr();
          if (isOp(")")) { ++p; return first; }
          auto e = mk(E::List, k); e->kids.push_back(first);
          while (isOp(",")) { ++p; if (isOp(")")) break; e->kids.push_back(parseExpr()); }
          expectOp(")");
          return e;
        }
        if (k.text == "[") {
          ++p; auto e = mk(E::List, k);
          while (!isOp("]")) { e->kids.push_back(parseExpr()); if (!isOp(",")) break; ++p; }
          expectOp("]");
          return e;
        }
        if (k.text == "{") {
          ++p; auto e = mk(E::Dict, k);
          while (!isOp("}")) {
            e->kids.push_back(parseExpr()); expectOp(":"); e->kids.push_back(parseExpr());
            if (!isOp(",")) break;
            ++p;
          }
          expectOp("}");
          return e;
        }
        break;
      default: break;
    }
    err(k, "unexpected token" + got().substr(5));
  }
  void parseArgs(ExprP e) {  // after '('
    while (!isOp(")")) {
      if (cur().type == T::Name && t[p + 1].type == T::Op && t[p + 1].text == "=") {
        std::string n = cur().text; p += 2; e->kwargs.emplace_back(n, parseExpr());
      } else {
        if (!e->kwargs.empty()) err(cur(), "positional argument after keyword argument");
        e->kids.push_back(parseExpr());
      }
      if (!isOp(",")) break;
      ++p;
    }
    expectOp(")");
  }
  ExprP parsePostfix(ExprP e) {
    while (true) {
      const Token& at = cur();
      if (isOp(".")) {
        ++p;
        auto a = mk(E::Attr, at);
        if (cur().type == T::Int) { a->kind = E::Item; auto l = mk(E::Lit, cur()); l->lit = Value::integer(std::stoll(cur().text)); ++p; a->kids = {e, l}; }
        else { a->name = expectName(); a->kids = {e}; }
        e = a;
      } else if (isOp("[")) {
        ++p;
        ExprP parts[3];
        bool isSlice = false;
        int idx = 0;
        while (true) {
          if (isOp(":")) { isSlice = true; ++p; if (++idx > 2) err(cur(), "invalid slice"); continue; }
          if (isOp("]")) break;
          parts[idx] = parseExpr();
          if (!isOp(":") && !isOp("]")) err(cur(), "expected ']'" + got());
        }
        expectOp("]");
        if (isSlice) { auto s = mk(E::Slice, at); s->kids = {e, parts[0], parts[1], parts[2]}; e = s; }
        else { if (!parts[0]) err(at, "empty subscript"); auto s = mk(E::Item, at); s->kids = {e, parts[0]}; e = s; }
      } else if (isOp("(")) {
        ++p; auto c = mk(E::Call, at); c->kids = {e}; parseArgs(c); e = c;
      } else {
        return e;
      }
    }
  }
  ExprP parseFilterTest(ExprP e) {
    while (true) {
      const Token& at = cur();
      if (isOp("|")) {
        ++p;
        auto f = mk(E::Filter, at);
        f->name = expectName();
        while (isOp(".")) { ++p; f->name += "." + expectName(); }
        f->kids = {e};
        if (isOp("(")) { ++p; parseArgs(f); }
        e = f;
      } else if (isName("is")) {
        ++p;
        auto f = mk(E::Test, at);
        if (isName("not")) { f->negated = true; ++p; }
        f->name = expectName();
        f->kids = {e};
        if (isOp("(")) { ++p; parseArgs(f); }
        else if ((cur().type == T::Name || cur().type == T::Str || cur().type == T::Int || cur().type == T::Float || isOp("[") || isOp("{")) &&
                 !isName("else") && !isName("or") && !isName("and")) {
          f->kids.push_back(parsePostfix(parsePrimary()));
        }
        e = f;
      } else {
        return e;
      }
    }
  }
};

// ---------------------------------------------------------------- evaluation
enum class Flow { Normal, Break, Continue };

struct Interp {
  std::vector<std::unordered_map<std::string, Value>> frames;

  Value lookup(const std::string& n) const {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) { auto f = it->find(n); if (f != it->end()) return f->second; }
    return Value::undefined(n);
  }

  Value call(const Value& f, Value::Args& a, Value::Kwargs& kw) {
    if (f.kind == Kind::Undefined) undefinedError(f);
    if (f.kind != Kind::Function) fail(std::string("'") + typeName(f) + "' object is not callable");
    return (*f.fn)(a, kw);
  }

  bool test(const std::string& name, const Value& v, Value::Args& a) {
    auto need = [&](size_t n) { if (a.size() < n) fail("test '" + name + "' needs an argument"); };
    if (name == "defined") return !v.isUndefined();
    if (name == "undefined") return v.isUndefined();
    if (name == "none") return v.kind == Kind::None;
    if (name == "string") return v.kind == Kind::String;
    if (name == "mapping") return v.kind == Kind::Dict;
    if (name == "iterable") return v.kind == Kind::String || v.kind == Kind::List || v.kind == Kind::Dict || v.kind == Kind::Undefined;
    if (name == "sequence") return v.kind == Kind::String || v.kind == Kind::List || v.kind == Kind::Dict || v.kind == Kind::Undefined;
    if (name == "number") return isNum(v);
    if (name == "integer") return v.kind == Kind::Int;
    if (name == "float") return v.kind == Kind::Float;
    if (name == "boolean") return v.kind == Kind::Bool;
    if (name == "true") return v.kind == Kind::Bool && v.b;
    if (name == "false") return v.kind == Kind::Bool && !v.b;
    if (name == "callable") return v.kind == Kind::Function;
    if (name == "odd" || name == "even") { if (!isNum(v)) fail("odd/even need a number"); return (numI(v) % 2 != 0) == (name == "odd"); }
    if (name == "divisibleby") { need(1); int64_t d = numI(a[0]); if (d == 0) fail("integer modulo by zero"); return numI(v) % d == 0; }
    if (name == "lower") return v.kind == Kind::String && lowerStr(v.s) == v.s;
    if (name == "upper") return v.kind == Kind::String && upperStr(v.s) == v.s;
    if (name == "eq" || name == "equalto" || name == "==") { need(1); return equals(v, a[0]); }
    if (name == "ne" || name == "!=") { need(1); return !equals(v, a[0]); }
    if (name == "lt" || name == "lessthan" || name == "<") { need(1); return compare(v, a[0], "<") < 0; }
    if (name == "le" || name == "<=") { need(1); return compare(v, a[0], "<=") <= 0; }
    if (name == "gt" || name == "greaterthan" || name == ">") { need(1); return compare(v, a[0], ">") > 0; }
    if (name == "ge" || name == ">=") { need(1); return compare(v, a[0], ">=") >= 0; }
    if (name == "in") { need(1); return contains(a[0], v); }
    if (name == "sameas") { need(1); return v.kind == a[0].kind && (v.kind == Kind::None || v.kind == Kind::Undefined || (v.kind == Kind::Bool && v.b == a[0].b) || equals(v, a[0])); }
    fail("no test named '" + name + "'");
  }

  Value attrPath(const Value& v, const std::string& path) {
    Value cur = v;
    size_t i = 0;
    while (true) {
      size_t j = path.find('.', i);
      std::string part = path.substr(i, j == std::string::npos ? std::string::npos : j - i);
      bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      cur = getItem(cur, digits ? Value::integer(std::stoll(part)) : Value::string(part));
      if (j == std::string::npos) return cur;
      i = j + 1;
    }
  }

  Value filter(const std::string& name, Value v, Value::Args& a, Value::Kwargs& kw) {
    if (name == "trim") {
      const Value* c = arg(a, kw, 0, "chars");
      return Value::string(stripChars(pyStr(v), c && c->kind == Kind::String ? &c->s : nullptr, true, true));
    }
    if (name == "tojson") {
      JsonOpts o;
      if (const Value* x = arg(a, kw, 0, "indent"); x && x->kind != Kind::None) {
        o.indent = x->kind == Kind::String ? x->s : std::string(size_t(std::max<int64_t>(0, numI(*x))), ' ');
        o.itemSep = ",";
      }
      if (const Value* x = kwarg(kw, "separators"); x && x->kind == Kind::List && x->list->size() == 2) { o.itemSep = (*x->list)[0].s; o.keySep = (*x->list)[1].s; }
      if (const Value* x = kwarg(kw, "sort_keys")) o.sortKeys = x->truthy();
      std::string out; toJson(out, v, o, 0); return Value::string(out);
    }
    if (name == "length" || name == "count") return Value::integer(length(v));
    if (name == "upper") return Value::string(upperStr(pyStr(v)));
    if (name == "lower") return Value::string(lowerStr(pyStr(v)));
    if (name == "capitalize") { std::string s = lowerStr(pyStr(v)); if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = char(s[0] - 32); return Value::string(s); }
    if (name == "default" || name == "d") {
      const Value* dv = arg(a, kw, 0, "default_value");
      const Value* bo = arg(a, kw, 1, "boolean");
      bool useDefault = v.isUndefined() || (bo && bo->truthy() && !v.truthy());
      return useDefault ? (dv ? *dv : Value::string("")) : v;
    }
    if (name == "first") { auto l = iterate(v); return l.empty() ? Value::undefined("first of empty sequence") : l.front(); }
    if (name == "last") {
      if (v.kind == Kind::Dict) fail("'dict' object is not reversible");
      auto l = iterate(v); return l.empty() ? Value::undefined("last of empty sequence") : l.back();
    }
    if (name == "join") {
      const Value* sep = arg(a, kw, 0, "d");
      const Value* at = arg(a, kw, 1, "attribute");
      std::string out, s = sep ? pyStr(*sep) : "";
      bool first = true;
      for (auto& x : iterate(v)) { if (!first) out += s; first = false; out += pyStr(at ? attrPath(x, pyStr(*at)) : x); }
      return Value::string(out);
    }
    if (name == "replace") {
      const Value* x = arg(a, kw, 0, "old"); const Value* y = arg(a, kw, 1, "new"); const Value* c = arg(a, kw, 2, "count");
      if (!x || !y) fail("replace filter needs 2 arguments");
      return Value::string(replaceAll(pyStr(v), pyStr(*x), pyStr(*y), c && c->kind != Kind::None ? numI(*c) : -1));
    }
    if (name == "string") return v.kind == Kind::String ? v : Value::string(pyStr(v));
    if (name == "int") {
      const Value* dflt = arg(a, kw, 0, "default");
      if (v.kind == Kind::Int) return v;
      if (v.kind == Kind::Bool) return Value::integer(v.b);
      if (v.kind == Kind::Float) return Value::integer(int64_t(v.d));
      if (v.kind == Kind::String) {
        std::string s = stripChars(v.s, nullptr, true, true);
        try { size_t n; int64_t r = std::stoll(s, &n, 10); if (n == s.size()) return Value::integer(r); } catch (...) {}
        try { size_t n; double r = std::stod(s, &n); if (n == s.size() && std::isfinite(r)) return Value::integer(int64_t(r)); } catch (...) {}
      }
      return dflt ? *dflt : Value::integer(0);
    }
    if (name == "float") {
      if (isNum(v)) return Value::real(numD(v));
      if (v.kind == Kind::String) { try { size_t n; double r = std::stod(v.s, &n); if (n == v.s.size()) return Value::real(r); } catch (...) {} }
      const Value* dflt = arg(a, kw, 0, "default");
      return dflt ? *dflt : Value::real(0);
    }
    if (name == "abs") { if (v.kind == Kind::Int) return Value::integer(std::llabs(v.i)); if (isNum(v)) return Value::real(std::fabs(numD(v))); fail("bad operand type for abs()"); }
    if (name == "items") return items(v);
    if (name == "list") return Value::makeList(iterate(v));
    if (name == "unique") { Value::List out; for (auto& x : iterate(v)) { bool seen = false; for (auto& y : out) if (equals(x, y)) seen = true; if (!seen) out.push_back(x); } return Value::makeList(out); }
    if (name == "reverse") {
      if (v.kind == Kind::String) { auto l = iterate(v); std::string s; for (auto it = l.rbegin(); it != l.rend(); ++it) s += it->s; return Value::string(s); }
      auto l = iterate(v); std::reverse(l.begin(), l.end()); return Value::makeList(l);
    }
    if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
      bool attr = name == "selectattr" || name == "rejectattr";
      bool sel = name == "selectattr" || name == "select";
      size_t base = attr ? 1 : 0;
      if (attr && a.empty()) fail(name + " needs an attribute name");
      Value::List out;
      for (auto& x : iterate(v)) {
        Value item = attr ? attrPath(x, pyStr(a[0])) : x;
        bool ok;
        if (a.size() > base) { Value::Args targs(a.begin() + long(base) + 1, a.end()); ok = test(pyStr(a[base]), item, targs); }
        else ok = item.truthy();
        if (ok == sel) out.push_back(x);
      }
      return Value::makeList(out);
    }
    if (name == "map") {
      Value::List out;
      if (const Value* at = kwarg(kw, "attribute")) {
        const Value* dflt = kwarg(kw, "default");
        for (auto& x : iterate(v)) { Value r = attrPath(x, pyStr(*at)); out.push_back(r.isUndefined() && dflt ? *dflt : r); }
      } else {
        if (a.empty()) fail("map needs a filter name or attribute=");
        std::string fname = pyStr(a[0]);
        Value::Args rest(a.begin() + 1, a.end());
        Value::Kwargs nokw;
        for (auto& x : iterate(v)) { Value::Args r2 = rest; out.push_back(filter(fname, x, r2, nokw)); }
      }
      return Value::makeList(out);
    }
    if (name == "dictsort") {
      if (v.kind != Kind::Dict) fail("dictsort needs a mapping");
      Value l = items(v);
      std::stable_sort(l.list->begin(), l.list->end(), [](const Value& x, const Value& y) { return lowerStr((*x.list)[0].s) < lowerStr((*y.list)[0].s); });
      return l;
    }
    fail("no filter named '" + name + "'");
  }

  Value binop(const std::string& op, const Value& l, const Value& r) {
    if (op == "~") return Value::string(pyStr(l) + pyStr(r));
    if (l.isUndefined()) undefinedError(l);
    if (r.isUndefined()) undefinedError(r);
    auto bad = [&]() -> Value { fail("unsupported operand type(s) for " + op + ": '" + typeName(l) + "' and '" + typeName(r) + "'"); };
    bool ints = (l.kind == Kind::Int || l.kind == Kind::Bool) && (r.kind == Kind::Int || r.kind == Kind::Bool);
    if (op == "+") {
      if (l.kind == Kind::String && r.kind == Kind::String) return Value::string(l.s + r.s);
      if (l.kind == Kind::List && r.kind == Kind::List) { Value::List x = *l.list; x.insert(x.end(), r.list->begin(), r.list->end()); return Value::makeList(x); }
      if (ints) return Value::integer(numI(l) + numI(r));
      if (isNum(l) && isNum(r)) return Value::real(numD(l) + numD(r));
      if (l.kind == Kind::String || r.kind == Kind::String) fail(std::string("can only concatenate str (not \"") + typeName(l.kind == Kind::String ? r : l) + "\") to str");
      return bad();
    }
    if (op == "*") {
      auto rep = [&](const Value& seq, int64_t n) {
        if (seq.kind == Kind::String) { std::string s; for (int64_t i = 0; i < n; ++i) s += seq.s; return Value::string(s); }
        Value::List x; for (int64_t i = 0; i < n; ++i) x.insert(x.end(), seq.list->begin(), seq.list->end()); return Value::makeList(x);
      };
      if ((l.kind == Kind::String || l.kind == Kind::List) && (r.kind == Kind::Int || r.kind == Kind::Bool)) return rep(l, numI(r));
      if ((r.kind == Kind::String || r.kind == Kind::List) && (l.kind == Kind::Int || l.kind == Kind::Bool)) return rep(r, numI(l));
    }
    if (!isNum(l) || !isNum(r)) return bad();
    if (op == "-") return ints ? Value::integer(numI(l) - numI(r)) : Value::real(numD(l) - numD(r));
    if (op == "*") return ints ? Value::integer(numI(l) * numI(r)) : Value::real(numD(l) * numD(r));
    if (op == "/") { if (numD(r) == 0) fail("division by zero"); return Value::real(numD(l) / numD(r)); }
    if (op == "//" || op == "%") {
      if (numD(r) == 0) fail(op == "%" ? "modulo by zero" : "integer division or modulo by zero");
      if (ints) {
        int64_t a = numI(l), b = numI(r), q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) { --q; m += b; }
        return Value::integer(op == "//" ? q : m);
      }
      double a = numD(l), b = numD(r);
      double q = std::floor(a / b), m = a - q * b;
      return Value::real(op == "//" ? q : m);
    }
    if (op == "**") {
      if (ints && numI(r) >= 0) { int64_t x = 1; for (int64_t i = 0; i < numI(r); ++i) x *= numI(l); return Value::integer(x); }
      return Value::real(std::pow(numD(l), numD(r)));
    }
    return bad();
  }

  Value eval(const Expr& e) {
    try {
      return evalInner(e);
    } catch (const TemplateError&) {
      throw;
    }
  }

  Value evalInner(const Expr& e) {
    switch (e.kind) {
      case E::Lit: return e.lit;
      case E::Name: return lookup(e.name);
      case E::Attr: return getAttr(eval(*e.kids[0]), e.name);
      case E::Item: { Value o = eval(*e.kids[0]); return getItem(o, eval(*e.kids[1])); }
      case E::Slice: {
        Value o = eval(*e.kids[0]);
        auto part = [&](int i) { return e.kids[size_t(i)] ? eval(*e.kids[size_t(i)]) : Value::none(); };
        return slice(o, part(1), part(2), part(3));
      }
      case E::Call: {
        Value f = eval(*e.kids[0]);
        Value::Args a; for (size_t i = 1; i < e.kids.size(); ++i) a.push_back(eval(*e.kids[i]));
        Value::Kwargs kw; for (auto& [k, x] : e.kwargs) kw.emplace_back(k, eval(*x));
        return call(f, a, kw);
      }
      case E::Filter: {
        Value v = eval(*e.kids[0]);
        Value::Args a; for (size_t i = 1; i < e.kids.size(); ++i) a.push_back(eval(*e.kids[i]));
        Value::Kwargs kw; for (auto& [k, x] : e.kwargs) kw.emplace_back(k, eval(*x));
        return filter(e.name, std::move(v), a, kw);
      }
      case E::Test: {
        Value v = eval(*e.kids[0]);
        Value::Args a; for (size_t i = 1; i < e.kids.size(); ++i) a.push_back(eval(*e.kids[i]));
        return Value::boolean(test(e.name, v, a) != e.negated);
      }
      case E::Neg: case E::Pos: {
        Value v = eval(*e.kids[0]);
        if (v.isUndefined()) undefinedError(v);
        if (!isNum(v)) fail(std::string("bad operand type for unary ") + (e.kind == E::Neg ? "-" : "+") + ": '" + typeName(v) + "'");
        if (e.kind == E::Pos) return v.kind == Kind::Bool ? Value::integer(numI(v)) : v;
        return v.kind == Kind::Float ? Value::real(-v.d) : Value::integer(-numI(v));
      }
      case E::Not: return Value::boolean(!eval(*e.kids[0]).truthy());
      case E::And: { Value l = eval(*e.kids[0]); return l.truthy() ? eval(*e.kids[1]) : l; }
      case E::Or: { Value l = eval(*e.kids[0]); return l.truthy() ? l : eval(*e.kids[1]); }
      case E::Bin: { Value l = eval(*e.kids[0]); return binop(e.name, l, eval(*e.kids[1])); }
      case E::Cmp: {
        Value l = eval(*e.kids[0]); Value r = eval(*e.kids[1]);
        const std::string& op = e.name;
        if (op == "==") return Value::boolean(equals(l, r));
        if (op == "!=") return Value::boolean(!equals(l, r));
        if (op == "in") return Value::boolean(contains(r, l));
        if (op == "notin") return Value::boolean(!contains(r, l));
        int c = compare(l, r, op.c_str());
        if (op == "<") return Value::boolean(c < 0);
        if (op == ">") return Value::boolean(c > 0);
        if (op == "<=") return Value::boolean(c <= 0);
        return Value::boolean(c >= 0);
      }
      case E::Cond:
        if (eval(*e.kids[0]).truthy()) return eval(*e.kids[1]);
        return e.kids[2] ? eval(*e.kids[2]) : Value::undefined();
      case E::List: { Value::List l; for (auto& k : e.kids) l.push_back(eval(*k)); return Value::makeList(std::move(l)); }
      case E::Dict: {
        Value d = Value::makeDict();
        for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
          Value k = eval(*e.kids[i]);
          if (k.kind != Kind::String) fail("only string dict keys are supported");
          d.set(k.s, eval(*e.kids[i + 1]));
        }
        return d;
      }
    }
    return Value::undefined();
  }

  void assign(const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) { frames.back()[targets[0]] = v; return; }
    auto l = iterate(v);
    if (l.size() != targets.size()) fail("cannot unpack " + std::to_string(l.size()) + " values into " + std::to_string(targets.size()) + " names");
    for (size_t i = 0; i < l.size(); ++i) frames.back()[targets[i]] = l[i];
  }

  Flow exec(const Body& body, std::string& out) {
    for (auto& np : body) {
      const Node& n = *np;
      switch (n.kind) {
        case N::Text: out += n.text; break;
        case N::Out: out += pyStr(eval(*n.expr)); break;
        case N::If: {
          bool done = false;
          for (auto& [c, b] : n.branches) {
            if (eval(*c).truthy()) { Flow f = exec(b, out); if (f != Flow::Normal) return f; done = true; break; }
          }
          if (!done) { Flow f = exec(n.elseBody, out); if (f != Flow::Normal) return f; }
          break;
        }
        case N::For: execFor(n, out); break;
        case N::Set: {
          Value v = eval(*n.expr);
          if (!n.attr.empty()) {
            Value ns = lookup(n.targets[0]);
            if (ns.kind != Kind::Namespace) fail("cannot assign attribute on non-namespace object");
            ns.set(n.attr, v);
          } else {
            frames.back()[n.targets[0]] = v;
          }
          break;
        }
        case N::SetBlock: { std::string s; exec(n.body, s); frames.back()[n.targets[0]] = Value::string(s); break; }
        case N::Break: return Flow::Break;
        case N::Continue: return Flow::Continue;
        case N::Scope: { Flow f = exec(n.body, out); if (f != Flow::Normal) return f; break; }
      }
    }
    return Flow::Normal;
  }

  void execFor(const Node& n, std::string& out) {
    std::vector<Value> all = iterate(eval(*n.expr));
    std::vector<Value> seq;
    if (n.cond) {
      frames.emplace_back();
      for (auto& x : all) { assign(n.targets, x); if (eval(*n.cond).truthy()) seq.push_back(x); }
      frames.pop_back();
    } else {
      seq = std::move(all);
    }
    if (seq.empty()) { frames.emplace_back(); exec(n.elseBody, out); frames.pop_back(); return; }
    int64_t len = int64_t(seq.size());
    for (int64_t i = 0; i < len; ++i) {
      frames.emplace_back();
      assign(n.targets, seq[size_t(i)]);
      Value loop = Value::makeDict({
          {"index", Value::integer(i + 1)}, {"index0", Value::integer(i)},
          {"revindex", Value::integer(len - i)}, {"revindex0", Value::integer(len - i - 1)},
          {"first", Value::boolean(i == 0)}, {"last", Value::boolean(i == len - 1)},
          {"length", Value::integer(len)}, {"depth", Value::integer(1)}, {"depth0", Value::integer(0)},
          {"previtem", i > 0 ? seq[size_t(i - 1)] : Value::undefined("there is no previous item")},
          {"nextitem", i + 1 < len ? seq[size_t(i + 1)] : Value::undefined("there is no next item")},
      });
      loop.set("cycle", Value::function([i](Value::Args& a, Value::Kwargs&) {
        if (a.empty()) fail("no items for cycling given");
        return a[size_t(i) % a.size()];
      }));
      frames.back()["loop"] = loop;
      Flow f = exec(n.body, out);
      frames.pop_back();
      if (f == Flow::Break) break;
    }
  }
};

std::string normalizeSource(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') { o += '\n'; if (i + 1 < s.size() && s[i + 1] == '\n') ++i; }
    else o += s[i];
  }
  if (!o.empty() && o.back() == '\n') o.pop_back();  // keep_trailing_newline=False
  return o;
}

}  // namespace

// ---------------------------------------------------------------- ChatTemplate
struct ChatTemplate::Impl {
  Body body;
};

ChatTemplate::ChatTemplate(const std::string& source) : source_(source) {
  std::string src = normalizeSource(source);
  Lexer lx(src);
  lx.run();
  Parser ps(lx.toks);
  auto impl = std::make_shared<Impl>();
  std::string end;
  impl->body = ps.parseBody({}, &end);
  impl_ = impl;
}

ChatTemplate ChatTemplate::fromTokenizerConfig(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("chat template: cannot open " + path);
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error("chat template: " + path + ": invalid JSON: " + e.what());
  }
  return fromTokenizerConfig(j, path);
}

ChatTemplate ChatTemplate::fromTokenizerConfig(const nlohmann::ordered_json& j, const std::string& path) {
  if (!j.is_object() || !j.contains("chat_template") || j.at("chat_template").is_null())
    throw std::runtime_error("chat template: " + path + " has no \"chat_template\"");
  const auto& ct = j.at("chat_template");
  std::string src;
  if (ct.is_string()) {
    src = ct.get<std::string>();
  } else if (ct.is_array()) {
    bool found = false;
    for (const auto& e : ct) {
      if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") && e["template"].is_string()) {
        src = e["template"].get<std::string>(); found = true; break;
      }
    }
    if (!found) throw std::runtime_error("chat template: " + path + ": \"chat_template\" list has no entry named \"default\"");
  } else {
    throw std::runtime_error("chat template: " + path + ": \"chat_template\" must be a string or a list of {name, template}");
  }
  try {
    return ChatTemplate(src);
  } catch (const TemplateError& e) {
    throw TemplateError(path + ": " + e.what());
  }
}

template <class J>
static std::string renderImpl(const std::shared_ptr<const ChatTemplate::Impl>& impl, const J& context) {
  Interp in;
  in.frames.emplace_back();
  auto& g = in.frames.back();
  g["raise_exception"] = Value::function([](Value::Args& a, Value::Kwargs&) -> Value {
    throw TemplateError(a.empty() ? std::string() : pyStr(a[0]));
  });
  g["strftime_now"] = Value::function([](Value::Args& a, Value::Kwargs&) {
    std::string fmt = a.empty() ? std::string() : pyStr(a[0]);
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
    return Value::string(std::string(buf, n));
  });
  g["namespace"] = Value::function([](Value::Args& a, Value::Kwargs& kw) {
    Value ns = Value::makeDict();
    ns.kind = Kind::Namespace;
    if (!a.empty() && a[0].kind == Kind::Dict) for (auto& [k, v] : *a[0].dict) ns.set(k, v);
    for (auto& [k, v] : kw) ns.set(k, v);
    return ns;
  });
  g["dict"] = Value::function([](Value::Args&, Value::Kwargs& kw) {
    Value d = Value::makeDict(); for (auto& [k, v] : kw) d.set(k, v); return d;
  });
  g["range"] = Value::function([](Value::Args& a, Value::Kwargs&) {
    int64_t start = 0, stop = 0, step = 1;
    if (a.size() == 1) stop = numI(a[0]);
    else if (a.size() >= 2) { start = numI(a[0]); stop = numI(a[1]); if (a.size() > 2) step = numI(a[2]); }
    if (step == 0) fail("range() arg 3 must not be zero");
    Value::List l;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) l.push_back(Value::integer(i));
    return Value::makeList(l);
  });
  in.frames.emplace_back();
  if (!context.is_object()) throw TemplateError("chat template context must be a JSON object");
  for (auto it = context.begin(); it != context.end(); ++it) in.frames.back()[it.key()] = Value::fromJson(it.value());
  std::string out;
  in.exec(impl->body, out);
  return out;
}

std::string ChatTemplate::render(const nlohmann::json& context) const { return renderImpl(impl_, context); }
std::string ChatTemplate::render(const nlohmann::ordered_json& context) const { return renderImpl(impl_, context); }

}  // namespace llmc::text
