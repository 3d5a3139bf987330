// Byte-level BPE tokenizer (see Tokenizer.h for the behaviour and reference).
#include "runtime/text/Tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace llmc::text {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error("tokenizer.json: " + msg); }

// ---------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------

enum class Utf8 { Valid, Invalid, Incomplete };

// Examines the sequence starting at p[0] (n >= 1 bytes available), following
// the WHATWG UTF-8 decoder. len is set to: the sequence length (Valid); the
// length of the maximal invalid subpart, >= 1, to be replaced by one U+FFFD
// (Invalid); n, when all n bytes are the start of a valid sequence
// (Incomplete).
Utf8 utf8Step(const unsigned char* p, size_t n, size_t& len) {
  const unsigned char b = p[0];
  if (b < 0x80) {
    len = 1;
    return Utf8::Valid;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    len = 1;
    return Utf8::Invalid;
  }
  for (size_t i = 1; i <= need; ++i) {
    if (i >= n) {
      len = n;
      return Utf8::Incomplete;
    }
    if (p[i] < lo || p[i] > hi) {
      len = i;
      return Utf8::Invalid;
    }
    lo = 0x80;
    hi = 0xBF;
  }
  len = need + 1;
  return Utf8::Valid;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Decodes the code point at s[i] of valid UTF-8 and advances i.
uint32_t nextCp(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  uint32_t c = p[0];
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    i += 2;
    return ((c & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (c < 0xF0) {
    i += 3;
    return ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  i += 4;
  return ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

// The code point ending at s[i-1] of valid UTF-8; moves i to its start.
uint32_t prevCp(std::string_view s, size_t& i) {
  size_t j = i - 1;
  while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
  size_t k = j;
  const uint32_t cp = nextCp(s, k);
  i = j;
  return cp;
}

// Unicode White_Space: Rust's char::is_whitespace and regex `\s`, and
// Oniguruma's `\s` (the reference's regex engine).
bool isWhiteSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}
constexpr std::string_view kWhiteSpaceClass =
    "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

// Rust regex's Unicode `\w` (used by single_word added tokens).
bool isWordChar(uint32_t c) {
  const auto cp = static_cast<UChar32>(c);
  return u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) ||
         (U_GET_GC_MASK(cp) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL);
}

// ---------------------------------------------------------------------------
// The byte-level alphabet (GPT-2's bytes_to_unicode)
// ---------------------------------------------------------------------------

struct ByteAlphabet {
  std::array<uint32_t, 256> cp{};  // byte -> code point
  std::array<int16_t, 324> byte{};  // code point -> byte, -1 if none
  ByteAlphabet() {
    byte.fill(-1);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      cp[b] = printable ? b : 256 + extra++;
      byte[cp[b]] = int16_t(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// The raw bytes a byte-level token stands for, or nullopt when the token has a
// character outside the alphabet (the text must be valid UTF-8).
std::optional<std::string> byteLevelToBytes(std::string_view token) {
  const ByteAlphabet& a = alphabet();
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    const uint32_t cp = nextCp(token, i);
    if (cp >= a.byte.size() || a.byte[cp] < 0) return std::nullopt;
    out += char(a.byte[cp]);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
struct SvEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
};
template <class T>
using StrMap = std::unordered_map<std::string, T, SvHash, SvEq>;

// (left id, right id) -> (rank, merged id): open addressing, linear probing.
class PairMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, 0);
    mask_ = cap - 1;
  }
  // Later entries replace earlier ones (as a Rust HashMap collected in order).
  void insert(int32_t a, int32_t b, int32_t rank, int32_t id) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    const uint64_t k = key(a, b);
    size_t i = slot(k);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    if (keys_[i] == kEmpty) ++size_;
    keys_[i] = k;
    vals_[i] = (uint64_t(uint32_t(rank)) << 32) | uint32_t(id);
  }
  bool find(int32_t a, int32_t b, int32_t& rank, int32_t& id) const {
    if (keys_.empty()) return false;
    const uint64_t k = key(a, b);
    for (size_t i = slot(k);; i = (i + 1) & mask_) {
      if (keys_[i] == k) {
        rank = int32_t(vals_[i] >> 32);
        id = int32_t(uint32_t(vals_[i]));
        return true;
      }
      if (keys_[i] == kEmpty) return false;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t slot(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> 17) & mask_; }
  void grow() {
    std::vector<uint64_t> keys = std::move(keys_), vals = std::move(vals_);
    reserve(std::max<size_t>(16, keys.size()));
    size_ = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == kEmpty) continue;
      insert(int32_t(keys[i] >> 32), int32_t(uint32_t(keys[i])), int32_t(vals[i] >> 32),
             int32_t(uint32_t(vals[i])));
    }
  }
  std::vector<uint64_t> keys_, vals_;
  size_t mask_ = 0, size_ = 0;
};

// ---------------------------------------------------------------------------
// Added tokens
// ---------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Leftmost-longest matching of a set of strings (Aho-Corasick's
// MatchKind::LeftmostLongest, as the reference uses) through a byte trie.
class AddedMatcher {
 public:
  bool empty() const { return terminal_.size() <= 1; }
  void add(std::string_view s, int32_t index) {
    if (s.empty()) return;
    if (terminal_.empty()) terminal_.push_back(-1);
    int32_t node = 0;
    for (unsigned char c : s) {
      auto [it, inserted] = edges_.try_emplace(edgeKey(node, c), int32_t(terminal_.size()));
      if (inserted) terminal_.push_back(-1);
      node = it->second;
    }
    terminal_[size_t(node)] = index;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  // The longest string starting at s[i]: its length (0 if none) and index.
  size_t longestAt(std::string_view s, size_t i, int32_t& index) const {
    size_t best = 0;
    int32_t node = 0;
    for (size_t j = i; j < s.size(); ++j) {
      const auto it = edges_.find(edgeKey(node, static_cast<unsigned char>(s[j])));
      if (it == edges_.end()) break;
      node = it->second;
      if (terminal_[size_t(node)] >= 0) {
        best = j + 1 - i;
        index = terminal_[size_t(node)];
      }
    }
    return best;
  }
  bool canStart(unsigned char c) const { return first_[c]; }

 private:
  static uint64_t edgeKey(int32_t node, unsigned char c) { return (uint64_t(uint32_t(node)) << 8) | c; }
  std::vector<int32_t> terminal_;  // node -> added token index, -1
  std::unordered_map<uint64_t, int32_t> edges_;
  std::array<bool, 256> first_{};
};

struct Piece {
  size_t begin, end;
  int32_t added;  // index into the added tokens, or -1 for text
};

// ---------------------------------------------------------------------------
// PCRE2
// ---------------------------------------------------------------------------

// Rewrites a pattern written for the reference's regex engine (Oniguruma) for
// PCRE2: `\s` and `\S` become the Unicode White_Space set and its complement
// (PCRE2's own `\s` differs on U+0085 and depends on its version). Other
// syntax is shared by the two engines for the patterns in use.
std::string translatePattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      if (e == 's') {
        if (in_class) {
          out += kWhiteSpaceClass;
        } else {
          out += '[';
          out += kWhiteSpaceClass;
          out += ']';
        }
      } else if (e == 'S') {
        if (in_class) fail("pre_tokenizer Split pattern: \\S inside a character class is not supported");
        out += "[^";
        out += kWhiteSpaceClass;
        out += ']';
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      const size_t close = p.find(":]", i + 2);
      if (close == std::string_view::npos) fail("pre_tokenizer Split pattern: unterminated [: in a class");
      out.append(p.substr(i, close + 2 - i));
      i = close + 1;
      continue;
    }
    if (in_class && c == '[') fail("pre_tokenizer Split pattern: nested character classes are not supported");
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

std::string pcre2Message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& what) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &off, nullptr);
    if (!code_) {
      fail(what + ": cannot compile /" + pattern + "/ at offset " + std::to_string(off) + ": " +
           pcre2Message(err));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the first match in s at or after start; returns false if none.
  bool find(std::string_view s, size_t start, pcre2_match_data* md, size_t& b, size_t& e) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    int rc = jit_ ? pcre2_jit_match(code_, subject, s.size(), start, 0, md, nullptr)
                  : pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = matchWithBigStack(s, start, md);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) throw std::runtime_error("tokenizer: regex match failed: " + pcre2Message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    b = ov[0];
    e = ov[1];
    return true;
  }

 private:
  int matchWithBigStack(std::string_view s, size_t start, pcre2_match_data* md) const {
    pcre2_match_context* mc = pcre2_match_context_create(nullptr);
    pcre2_jit_stack* stack = pcre2_jit_stack_create(1 << 16, 256 << 20, nullptr);
    int rc = PCRE2_ERROR_NOMEMORY;
    if (mc && stack) {
      pcre2_jit_stack_assign(mc, nullptr, stack);
      rc = pcre2_jit_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, mc);
    }
    if (stack) pcre2_jit_stack_free(stack);
    if (mc) pcre2_match_context_free(mc);
    return rc;
  }
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

struct MatchData {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  MatchData() {
    if (!md) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

// GPT-2's split pattern (ByteLevel with use_regex).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

const json* member(const json& o, const char* key) {
  if (!o.is_object()) return nullptr;
  const auto it = o.find(key);
  return it == o.end() ? nullptr : &*it;
}

bool getBool(const json& o, const char* key, bool def, const std::string& where) {
  const json* v = member(o, key);
  if (!v || v->is_null()) return def;
  if (!v->is_boolean()) fail(where + "." + key + " must be a boolean");
  return v->get<bool>();
}

std::optional<std::string> getString(const json& o, const char* key, const std::string& where) {
  const json* v = member(o, key);
  if (!v || v->is_null()) return std::nullopt;
  if (!v->is_string()) fail(where + "." + key + " must be a string");
  return v->get<std::string>();
}

std::string typeOf(const json& o, const std::string& where) {
  const json* t = member(o, "type");
  if (!t || !t->is_string()) fail(where + " has no \"type\" string");
  return t->get<std::string>();
}

int32_t getId(const json& v, const std::string& where) {
  if (!v.is_number_integer()) fail(where + " must be an integer id");
  const int64_t id = v.get<int64_t>();
  if (id < 0 || id > INT32_MAX - 1) fail(where + " = " + std::to_string(id) + " is out of range");
  return int32_t(id);
}

std::string jsonQuote(std::string_view s) { return json(std::string(s)).dump(-1, ' ', true); }

}  // namespace

// ---------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------

struct Tokenizer::Impl {
  // Vocabulary (ids index these).
  std::vector<std::string> id_text;   // token as written in the file
  std::vector<std::string> id_bytes;  // what decode() emits
  std::vector<uint8_t> id_flags;      // kExists | kSpecial
  static constexpr uint8_t kExists = 1, kSpecial = 2;
  StrMap<int32_t> text_to_id;         // added tokens, then the model vocabulary
  StrMap<int32_t> bytes_to_id;        // model vocabulary by raw bytes (ignore_merges)
  int32_t vocab_size = 0;

  // BPE.
  std::array<int32_t, 256> byte_id{};  // the one-byte token, -1 if none
  // With byte_fallback, a byte whose byte-level character is not in the
  // vocabulary becomes the "<0xXX>" tokens of that character's UTF-8 bytes
  // (as the reference's BPE does), when all of them exist: up to 2 ids.
  std::array<std::array<int32_t, 2>, 256> byte_fallback_ids{};
  std::array<uint8_t, 256> byte_fallback_len{};  // 0: none
  PairMap merges;
  bool ignore_merges = false, byte_fallback = false, fuse_unk = false;
  int32_t unk_id = -1;

  bool nfc = false;
  std::vector<std::unique_ptr<Regex>> splits;  // applied in order, "Isolated"

  std::vector<AddedToken> added;
  AddedMatcher raw_matcher, normalized_matcher;

  static constexpr size_t kCacheCapacity = 1 << 16;
  static constexpr size_t kCacheMaxWord = 256;
  mutable std::mutex cache_mu;
  mutable StrMap<std::vector<int32_t>> cache;

  void encodeText(std::string_view text, bool allow_special, pcre2_match_data* md,
                  std::vector<int32_t>& out) const;
  void splitAdded(std::string_view s, const AddedMatcher& m, bool allow_special,
                  std::vector<Piece>& pieces) const;
  void encodeNormalized(std::string_view s, bool allow_special, pcre2_match_data* md,
                        std::vector<int32_t>& out) const;
  void preTokenize(std::string_view s, size_t level, pcre2_match_data* md, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void mergeWord(std::string_view word, std::vector<int32_t>& out) const;
  std::string normalize(std::string_view s) const;
};

namespace {

const icu::Normalizer2& nfcInstance() {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || !n) throw std::runtime_error(std::string("tokenizer: ICU NFC unavailable: ") + u_errorName(status));
  return *n;
}

void parseModel(const json& model, Tokenizer::Impl& t) {
  const std::string type = member(model, "type") ? typeOf(model, "model") : "BPE";
  if (type != "BPE") fail("model.type " + jsonQuote(type) + " is not supported (only BPE)");
  if (const json* d = member(model, "dropout"); d && !d->is_null()) {
    if (!d->is_number()) fail("model.dropout must be a number or null");
    if (d->get<double>() != 0.0) fail("model.dropout (BPE dropout) is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto s = getString(model, key, "model"); s && !s->empty()) {
      fail(std::string("model.") + key + " " + jsonQuote(*s) + " is not supported");
    }
  }
  t.ignore_merges = getBool(model, "ignore_merges", false, "model");
  t.byte_fallback = getBool(model, "byte_fallback", false, "model");
  t.fuse_unk = getBool(model, "fuse_unk", false, "model");

  const json* vocab = member(model, "vocab");
  if (!vocab || !vocab->is_object()) fail("model.vocab must be an object mapping tokens to ids");
  std::vector<const std::string*> by_id;
  t.text_to_id.reserve(vocab->size() + 1024);
  t.bytes_to_id.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const int32_t id = getId(it.value(), "model.vocab[" + jsonQuote(it.key()) + "]");
    if (size_t(id) >= by_id.size()) by_id.resize(size_t(id) + 1, nullptr);
    if (by_id[size_t(id)]) {
      fail("model.vocab: id " + std::to_string(id) + " is given to both " + jsonQuote(*by_id[size_t(id)]) +
           " and " + jsonQuote(it.key()));
    }
    if (!isValidUtf8(it.key())) fail("model.vocab: a token is not valid UTF-8");
    const auto pos = t.text_to_id.emplace(it.key(), id).first;
    by_id[size_t(id)] = &pos->first;
  }
  t.id_text.resize(by_id.size());
  t.id_bytes.resize(by_id.size());
  t.id_flags.assign(by_id.size(), 0);
  for (size_t id = 0; id < by_id.size(); ++id) {
    if (!by_id[id]) continue;
    t.id_text[id] = *by_id[id];
    t.id_flags[id] = Tokenizer::Impl::kExists;
    if (auto bytes = byteLevelToBytes(t.id_text[id])) {
      t.id_bytes[id] = *bytes;
      t.bytes_to_id.emplace(std::move(*bytes), int32_t(id));
    } else {
      t.id_bytes[id] = t.id_text[id];  // the reference's fallback: the token's UTF-8
    }
  }

  const ByteAlphabet& a = alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    appendUtf8(ch, a.cp[size_t(b)]);
    const auto it = t.text_to_id.find(ch);
    t.byte_id[size_t(b)] = it == t.text_to_id.end() ? -1 : it->second;
    if (!t.byte_fallback) continue;
    uint8_t len = 0;
    for (unsigned char u : ch) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "<0x%02X>", u);
      const auto fb = t.text_to_id.find(std::string_view(hex));
      if (fb == t.text_to_id.end()) {
        len = 0;
        break;
      }
      t.byte_fallback_ids[size_t(b)][len++] = fb->second;
    }
    t.byte_fallback_len[size_t(b)] = len;
  }
  if (auto unk = getString(model, "unk_token", "model")) {
    // Like the reference, an unknown unk_token only matters once needed; a
    // byte-level vocabulary never needs it.
    if (const auto it = t.text_to_id.find(*unk); it != t.text_to_id.end()) t.unk_id = it->second;
  }

  const json* merges = member(model, "merges");
  if (!merges || !merges->is_array()) fail("model.merges must be an array");
  t.merges.reserve(merges->size());
  std::string left, right;
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& m = (*merges)[rank];
    const std::string where = "model.merges[" + std::to_string(rank) + "]";
    if (m.is_string()) {
      const auto& s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail(where + " " + jsonQuote(s) + " is not two tokens separated by one space");
      }
      left.assign(s, 0, sp);
      right.assign(s, sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail(where + " must be a string \"a b\" or a pair [\"a\", \"b\"]");
    }
    const auto l = t.text_to_id.find(left), r = t.text_to_id.find(right);
    if (l == t.text_to_id.end()) fail(where + ": token " + jsonQuote(left) + " is not in the vocabulary");
    if (r == t.text_to_id.end()) fail(where + ": token " + jsonQuote(right) + " is not in the vocabulary");
    const auto merged = t.text_to_id.find(left + right);
    if (merged == t.text_to_id.end()) {
      fail(where + ": the merged token " + jsonQuote(left + right) + " is not in the vocabulary");
    }
    t.merges.insert(l->second, r->second, int32_t(rank), merged->second);
  }
}

void parseNormalizer(const json& n, Tokenizer::Impl& t) {
  if (n.is_null()) return;
  const std::string type = typeOf(n, "normalizer");
  if (type == "NFC") {
    t.nfc = true;
  } else if (type == "Sequence") {
    const json* list = member(n, "normalizers");
    if (!list || !list->is_array()) fail("normalizer Sequence has no \"normalizers\" array");
    for (const json& e : *list) parseNormalizer(e, t);
  } else {
    fail("normalizer type " + jsonQuote(type) + " is not supported (supported: NFC, a Sequence of NFC, or null)");
  }
}

void flattenPreTokenizer(const json& p, std::vector<const json*>& steps) {
  if (typeOf(p, "pre_tokenizer") == "Sequence") {
    const json* list = member(p, "pretokenizers");
    if (!list || !list->is_array()) fail("pre_tokenizer Sequence has no \"pretokenizers\" array");
    for (const json& e : *list) flattenPreTokenizer(e, steps);
  } else {
    steps.push_back(&p);
  }
}

std::string escapeLiteral(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::strchr("\\^$.|?*+()[]{}-/#&~", c) && c != '\0') out += '\\';
    out += c;
  }
  return out;
}

void parsePreTokenizer(const json& p, Tokenizer::Impl& t) {
  if (p.is_null()) fail("pre_tokenizer is null; only byte-level BPE (a ByteLevel pre-tokenizer) is supported");
  std::vector<const json*> steps;
  flattenPreTokenizer(p, steps);
  bool byte_level = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& s = *steps[i];
    const std::string type = typeOf(s, "pre_tokenizer step");
    const std::string where = "pre_tokenizer " + type;
    if (byte_level) fail(where + " after ByteLevel is not supported (ByteLevel must be the last step)");
    if (type == "Split") {
      const auto behavior = getString(s, "behavior", where);
      if (behavior != "Isolated") {
        fail(where + ": behavior " + jsonQuote(behavior.value_or("(missing)")) + " is not supported (only Isolated)");
      }
      if (getBool(s, "invert", false, where)) fail(where + ": invert=true is not supported");
      const json* pattern = member(s, "pattern");
      std::string regex;
      if (pattern && member(*pattern, "Regex") && (*pattern)["Regex"].is_string()) {
        regex = translatePattern((*pattern)["Regex"].get<std::string>());
      } else if (pattern && member(*pattern, "String") && (*pattern)["String"].is_string()) {
        regex = escapeLiteral((*pattern)["String"].get<std::string>());
      } else {
        fail(where + ": pattern must be {\"Regex\": ...} or {\"String\": ...}");
      }
      t.splits.push_back(std::make_unique<Regex>(regex, where + " pattern"));
    } else if (type == "ByteLevel") {
      if (getBool(s, "add_prefix_space", true, where)) fail(where + ": add_prefix_space=true is not supported");
      if (getBool(s, "use_regex", true, where)) {
        t.splits.push_back(std::make_unique<Regex>(translatePattern(kGpt2Pattern), where + " (GPT-2 pattern)"));
      }
      byte_level = true;
    } else {
      fail("pre_tokenizer type " + jsonQuote(type) + " is not supported (supported: Sequence, Split, ByteLevel)");
    }
  }
  if (!byte_level) fail("pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
}

void parseDecoder(const json& d) {
  if (d.is_null()) fail("decoder is null; only the ByteLevel decoder is supported");
  const std::string type = typeOf(d, "decoder");
  if (type == "Sequence") {
    const json* list = member(d, "decoders");
    if (!list || !list->is_array() || list->empty()) fail("decoder Sequence has no \"decoders\" array");
    for (const json& e : *list) parseDecoder(e);
  } else if (type != "ByteLevel") {
    fail("decoder type " + jsonQuote(type) + " is not supported (only ByteLevel)");
  }
}

void parseAddedTokens(const json* list, Tokenizer::Impl& t) {
  if (!list || list->is_null()) return;
  if (!list->is_array()) fail("added_tokens must be an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const json& e = (*list)[i];
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    if (!e.is_object()) fail(where + " must be an object");
    AddedToken a;
    const json* id = member(e, "id");
    if (!id) fail(where + " has no id");
    a.id = getId(*id, where + ".id");
    auto content = getString(e, "content", where);
    if (!content || content->empty()) fail(where + " has no content");
    if (!isValidUtf8(*content)) fail(where + ".content is not valid UTF-8");
    a.content = std::move(*content);
    a.special = getBool(e, "special", false, where);
    a.lstrip = getBool(e, "lstrip", false, where);
    a.rstrip = getBool(e, "rstrip", false, where);
    a.single_word = getBool(e, "single_word", false, where);
    a.normalized = getBool(e, "normalized", !a.special, where);
    t.added.push_back(std::move(a));
  }
  for (size_t i = 0; i < t.added.size(); ++i) {
    const AddedToken& a = t.added[i];
    const size_t id = size_t(a.id);
    if (id >= t.id_text.size()) {
      t.id_text.resize(id + 1);
      t.id_bytes.resize(id + 1);
      t.id_flags.resize(id + 1, 0);
    }
    t.id_text[id] = a.content;
    auto bytes = byteLevelToBytes(a.content);
    t.id_bytes[id] = bytes ? *bytes : a.content;
    t.id_flags[id] = uint8_t(Tokenizer::Impl::kExists | (a.special ? Tokenizer::Impl::kSpecial : 0));
    t.text_to_id[a.content] = a.id;  // added tokens win over the model vocabulary
    if (!a.normalized) {
      t.raw_matcher.add(a.content, int32_t(i));
    } else {
      t.normalized_matcher.add(t.normalize(a.content), int32_t(i));
    }
  }
}

}  // namespace

std::string Tokenizer::Impl::normalize(std::string_view s) const {
  if (!nfc) return std::string(s);
  // Every character below U+0300 (lead bytes < 0xCC) is NFC_Quick_Check=Yes
  // with combining class 0 and composes with nothing before it.
  bool fast = true;
  for (unsigned char c : s) {
    if (c >= 0xCC) {
      fast = false;
      break;
    }
  }
  if (fast) return std::string(s);
  const icu::Normalizer2& n = nfcInstance();
  UErrorCode status = U_ZERO_ERROR;
  const icu::StringPiece sp(s.data(), int32_t(s.size()));
  if (n.isNormalizedUTF8(sp, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  std::string out;
  out.reserve(s.size() + 16);
  icu::StringByteSink<std::string> sink(&out);
  n.normalizeUTF8(0, sp, sink, nullptr, status);
  if (U_FAILURE(status)) throw std::runtime_error(std::string("tokenizer: NFC failed: ") + u_errorName(status));
  return out;
}

// The reference's AddedVocabulary::find_matches.
void Tokenizer::Impl::splitAdded(std::string_view s, const AddedMatcher& m, bool allow_special,
                                 std::vector<Piece>& pieces) const {
  pieces.clear();
  size_t start_offset = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (!m.canStart(static_cast<unsigned char>(s[i]))) {
      ++i;
      continue;
    }
    int32_t index = -1;
    const size_t len = m.longestAt(s, i, index);
    if (len == 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + len;
    i = stop;  // the next match is searched after this one, kept or not
    const AddedToken& a = added[size_t(index)];
    if (a.special && !allow_special) continue;
    if (a.single_word) {
      size_t p = start, q = stop;
      const bool start_space = start == 0 || !isWordChar(prevCp(s, p));
      const bool stop_space = stop == s.size() || !isWordChar(nextCp(s, q));
      if (!start_space || !stop_space) continue;
    }
    if (a.lstrip) {
      size_t p = start;
      while (p > 0) {
        size_t q = p;
        if (!isWhiteSpace(prevCp(s, q))) break;
        p = q;
      }
      start = std::max(p, start_offset);
    }
    if (a.rstrip) {
      while (stop < s.size()) {
        size_t q = stop;
        if (!isWhiteSpace(nextCp(s, q))) break;
        stop = q;
      }
      i = std::max(i, stop);
    }
    if (start_offset < start) pieces.push_back({start_offset, start, -1});
    pieces.push_back({start, stop, index});
    start_offset = stop;
  }
  if (start_offset < s.size()) pieces.push_back({start_offset, s.size(), -1});
}

void Tokenizer::Impl::encodeText(std::string_view text, bool allow_special, pcre2_match_data* md,
                                 std::vector<int32_t>& out) const {
  std::vector<Piece> pieces;
  if (raw_matcher.empty()) {
    pieces.push_back({0, text.size(), -1});
  } else {
    splitAdded(text, raw_matcher, allow_special, pieces);
  }
  for (const Piece& p : pieces) {
    if (p.added >= 0) {
      out.push_back(added[size_t(p.added)].id);
      continue;
    }
    const std::string_view s = text.substr(p.begin, p.end - p.begin);
    if (!nfc) {
      encodeNormalized(s, allow_special, md, out);
    } else {
      const std::string n = normalize(s);
      encodeNormalized(n, allow_special, md, out);
    }
  }
}

void Tokenizer::Impl::encodeNormalized(std::string_view s, bool allow_special, pcre2_match_data* md,
                                       std::vector<int32_t>& out) const {
  if (normalized_matcher.empty()) {
    preTokenize(s, 0, md, out);
    return;
  }
  std::vector<Piece> pieces;
  splitAdded(s, normalized_matcher, allow_special, pieces);
  for (const Piece& p : pieces) {
    if (p.added >= 0) {
      out.push_back(added[size_t(p.added)].id);
    } else {
      preTokenize(s.substr(p.begin, p.end - p.begin), 0, md, out);
    }
  }
}

// Split step `level` ("Isolated": every match and every gap between matches
// is a piece), then the next step; BPE after the last one.
void Tokenizer::Impl::preTokenize(std::string_view s, size_t level, pcre2_match_data* md,
                                  std::vector<int32_t>& out) const {
  if (s.empty()) return;
  if (level == splits.size()) {
    bpe(s, out);
    return;
  }
  const Regex& re = *splits[level];
  size_t pos = 0, last = 0, b = 0, e = 0;
  while (pos <= s.size() && re.find(s, pos, md, b, e)) {
    if (e == b) {  // empty match: not a piece; move on by one character
      if (b >= s.size()) break;
      size_t next = b;
      nextCp(s, next);
      pos = next;
      continue;
    }
    if (b > last) preTokenize(s.substr(last, b - last), level + 1, md, out);
    preTokenize(s.substr(b, e - b), level + 1, md, out);
    last = pos = e;
  }
  if (last < s.size()) preTokenize(s.substr(last), level + 1, md, out);
}

void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    if (const auto it = bytes_to_id.find(word); it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() == 1 && byte_id[static_cast<unsigned char>(word[0])] >= 0) {
    out.push_back(byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kCacheMaxWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (const auto it = cache.find(word); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out.size();
  mergeWord(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + std::ptrdiff_t(before), out.end());
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kCacheCapacity) cache.clear();
    cache.emplace(std::string(word), std::move(ids));
  }
}

// The reference's Word::merge_all: a min-heap of (rank, position) over the
// adjacent pairs; stale entries are skipped when popped.
void Tokenizer::Impl::mergeWord(std::string_view word, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t id, prev, next, len;
  };
  struct Cand {
    int32_t rank, pos, id;
  };
  std::vector<Sym> syms;
  syms.reserve(word.size());
  bool last_unk = false;
  for (unsigned char b : word) {
    int32_t id = byte_id[b];
    if (id < 0 && byte_fallback_len[b] > 0) {
      for (uint8_t i = 0; i < byte_fallback_len[b]; ++i)
        syms.push_back({byte_fallback_ids[b][i], int32_t(syms.size()) - 1, int32_t(syms.size()) + 1, 1});
      last_unk = false;
      continue;
    }
    if (id < 0) {
      if (unk_id < 0) continue;  // the reference drops it when there is no unk token
      if (fuse_unk && last_unk) {
        ++syms.back().len;
        continue;
      }
      id = unk_id;
      last_unk = true;
    } else {
      last_unk = false;
    }
    syms.push_back({id, int32_t(syms.size()) - 1, int32_t(syms.size()) + 1, 1});
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  std::vector<Cand> heap;
  heap.reserve(syms.size() * 2);
  const auto later = [](const Cand& x, const Cand& y) {  // true when x comes after y
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  int32_t rank = 0, id = 0;
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (merges.find(syms[i].id, syms[i + 1].id, rank, id)) heap.push_back({rank, int32_t(i), id});
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Cand top = heap.back();
    heap.pop_back();
    Sym& cur = syms[size_t(top.pos)];
    if (cur.len == 0 || cur.next < 0) continue;
    Sym& right = syms[size_t(cur.next)];
    if (!merges.find(cur.id, right.id, rank, id) || id != top.id) continue;  // stale
    cur.id = top.id;
    cur.len += right.len;
    right.len = 0;
    cur.next = right.next;
    if (cur.next >= 0) syms[size_t(cur.next)].prev = top.pos;
    if (cur.prev >= 0 && merges.find(syms[size_t(cur.prev)].id, cur.id, rank, id)) {
      heap.push_back({rank, cur.prev, id});
      std::push_heap(heap.begin(), heap.end(), later);
    }
    if (cur.next >= 0 && merges.find(cur.id, syms[size_t(cur.next)].id, rank, id)) {
      heap.push_back({rank, top.pos, id});
      std::push_heap(heap.begin(), heap.end(), later);
    }
  }
  for (int32_t i = 0; i >= 0; i = syms[size_t(i)].next) out.push_back(syms[size_t(i)].id);
}

Tokenizer Tokenizer::fromJson(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail("the top level is not a JSON object");
  auto t = std::make_shared<Impl>();
  try {
    const json* model = member(j, "model");
    if (!model || !model->is_object()) fail("missing the \"model\" object");
    parseModel(*model, *t);
    if (const json* n = member(j, "normalizer")) parseNormalizer(*n, *t);
    const json* pre = member(j, "pre_tokenizer");
    parsePreTokenizer(pre ? *pre : json(nullptr), *t);
    const json* dec = member(j, "decoder");
    parseDecoder(dec ? *dec : json(nullptr));
    parseAddedTokens(member(j, "added_tokens"), *t);
  } catch (const json::exception& e) {
    fail(std::string("unexpected structure: ") + e.what());
  }
  t->vocab_size = int32_t(t->id_text.size());
  if (t->vocab_size == 0) fail("the vocabulary is empty");
  return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::fromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open tokenizer file '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) throw std::runtime_error("cannot read tokenizer file '" + path + "'");
  try {
    return fromJson(ss.str());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  std::string fixed;
  if (!isValidUtf8(text)) {
    fixed = toValidUtf8(text);
    text = fixed;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  MatchData md;
  impl_->encodeText(text, allow_special, md.md, out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& t = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= t.vocab_size) continue;
    const uint8_t f = t.id_flags[size_t(id)];
    if (!(f & Impl::kExists) || (skip_special && (f & Impl::kSpecial))) continue;
    out += t.id_bytes[size_t(id)];
  }
  return out;
}

std::optional<int32_t> Tokenizer::tokenId(std::string_view token) const {
  const auto it = impl_->text_to_id.find(token);
  if (it == impl_->text_to_id.end()) return std::nullopt;
  return it->second;
}

const std::string* Tokenizer::tokenText(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size || !(impl_->id_flags[size_t(id)] & Impl::kExists)) return nullptr;
  return &impl_->id_text[size_t(id)];
}

int32_t Tokenizer::vocabSize() const { return impl_->vocab_size; }

bool Tokenizer::isSpecial(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && (impl_->id_flags[size_t(id)] & Impl::kSpecial);
}

std::string_view Tokenizer::tokenBytes(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size || !(impl_->id_flags[size_t(id)] & Impl::kExists)) return {};
  return impl_->id_bytes[size_t(id)];
}

// ---------------------------------------------------------------------------
// UTF-8 utilities and the incremental decoder
// ---------------------------------------------------------------------------

bool isValidUtf8(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    size_t len = 0;
    if (utf8Step(p + i, n - i, len) != Utf8::Valid) return false;
    i += len;
  }
  return true;
}

std::string toValidUtf8(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::string out;
  out.reserve(bytes.size() + 8);
  size_t i = 0;
  while (i < bytes.size()) {
    size_t len = 0;
    if (utf8Step(p + i, bytes.size() - i, len) == Utf8::Valid) {
      out.append(bytes.data() + i, len);
    } else {
      out += kReplacement;
    }
    i += len;
  }
  return out;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_.isSpecial(id)) return {};
  pending_ += tokenizer_.tokenBytes(id);
  const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    size_t len = 0;
    const Utf8 r = utf8Step(p + i, pending_.size() - i, len);
    if (r == Utf8::Incomplete) break;  // may still complete: hold back
    if (r == Utf8::Valid) {
      out.append(pending_, i, len);
    } else {
      out += kReplacement;
    }
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = toValidUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace llmc::text
