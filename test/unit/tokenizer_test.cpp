// Unit tests for runtime/text/Tokenizer.{h,cpp}.
//
// Needs (and fails, not skips, without):
//   LLMC_TOKENIZER_DIR  a directory with llama3/ and qwen3/ tokenizer files
//                       (test/text/fetch.sh DIR fetches them; ctest runs it)
//   LLMC_TEXT_EXPECTED  test/text/expected.json (made by make_expected.mjs
//                       with Hugging Face tokenizers; also holds two small
//                       synthetic tokenizers)
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/text/Tokenizer.h"

using llmc::text::IncrementalDecoder;
using llmc::text::isValidUtf8;
using llmc::text::Tokenizer;
using llmc::text::toValidUtf8;
using json = nlohmann::json;

namespace {

const char* const kRealTokenizers[] = {"llama3", "qwen3"};
const char* const kAllTokenizers[] = {"llama3", "qwen3", "synthetic_nfc", "synthetic_gpt2",
                                      "synthetic_byte_fallback"};

std::string base64Decode(std::string_view in) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const size_t v = kAlphabet.find(c);
    if (v == std::string::npos) throw std::runtime_error("bad base64");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xFF);
    }
  }
  return out;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Everything the reference tests need, loaded once; `error` says what is missing.
struct Fixture {
  std::string error;
  json expected;
  std::map<std::string, std::unique_ptr<Tokenizer>> tokenizers;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture f;
    const char* dir = std::getenv("LLMC_TOKENIZER_DIR");
    const char* exp = std::getenv("LLMC_TEXT_EXPECTED");
    if (!dir || !*dir || !exp || !*exp) {
      f.error =
          "LLMC_TOKENIZER_DIR (llama3/ and qwen3/ from test/text/fetch.sh) and LLMC_TEXT_EXPECTED "
          "(test/text/expected.json) must be set";
      return f;
    }
    try {
      f.expected = json::parse(readFile(exp));
      for (const char* name : kRealTokenizers) {
        f.tokenizers[name] =
            std::make_unique<Tokenizer>(Tokenizer::fromFile(std::string(dir) + "/" + name + "/tokenizer.json"));
      }
      for (const auto& [name, j] : f.expected.at("_tokenizers").items()) {
        f.tokenizers[name] = std::make_unique<Tokenizer>(Tokenizer::fromJson(j.dump()));
      }
      for (const char* name : kAllTokenizers) {
        if (!f.expected.contains(name)) throw std::runtime_error(std::string("no cases for ") + name);
      }
    } catch (const std::exception& e) {
      f.error = e.what();
    }
    return f;
  }();
  return f;
}

class TokenizerRef : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fixture().error.empty()) << fixture().error; }
  static const Tokenizer& tok(const std::string& name) { return *fixture().tokenizers.at(name); }
  static const json& cases(const std::string& name) { return fixture().expected.at(name); }
};

std::vector<int32_t> ids(const json& j) { return j.get<std::vector<int32_t>>(); }

// Decodes through IncrementalDecoder; every chunk must be valid UTF-8.
std::string streamDecode(const Tokenizer& t, const std::vector<int32_t>& v, bool skip_special,
                         size_t* held_back = nullptr) {
  IncrementalDecoder dec(t, skip_special);
  std::string all;
  for (int32_t id : v) {
    const std::string chunk = dec.push(id);
    EXPECT_TRUE(isValidUtf8(chunk)) << "push(" << id << ") returned a broken UTF-8 sequence";
    if (held_back && chunk.empty() && !t.tokenBytes(id).empty()) ++*held_back;
    all += chunk;
  }
  const std::string rest = dec.flush();
  EXPECT_TRUE(isValidUtf8(rest));
  return all + rest;
}

TEST_F(TokenizerRef, IdsMatchReference) {
  for (const char* name : kAllTokenizers) {
    size_t n = 0;
    for (const auto& [cname, c] : cases(name).items()) {
      SCOPED_TRACE(std::string(name) + "/" + cname);
      const std::string text = base64Decode(c.at("text").get<std::string>());
      EXPECT_EQ(tok(name).encode(text), ids(c.at("ids")));
      // allow_special=false: special added tokens are plain text.
      EXPECT_EQ(tok(name).encode(text, false), ids(c.contains("ids_plain") ? c["ids_plain"] : c["ids"]));
      ++n;
    }
    EXPECT_GE(n, 8u) << name;
  }
}

TEST_F(TokenizerRef, DecodeMatchesReference) {
  for (const char* name : kAllTokenizers) {
    for (const auto& [cname, c] : cases(name).items()) {
      SCOPED_TRACE(std::string(name) + "/" + cname);
      const auto v = ids(c.at("ids"));
      const std::string decoded = base64Decode(c.at("decoded").get<std::string>());
      const std::string skip = c.contains("decoded_skip") ? base64Decode(c["decoded_skip"].get<std::string>()) : decoded;
      // The reference returns U+FFFD for bytes that are not valid UTF-8, llmc the bytes.
      EXPECT_EQ(toValidUtf8(tok(name).decode(v)), decoded);
      EXPECT_EQ(toValidUtf8(tok(name).decode(v, true)), skip);
    }
  }
}

// decode(encode(x)) == x for valid UTF-8 (the synthetic tokenizers are left
// out: their lstrip/rstrip tokens swallow whitespace by design).
TEST_F(TokenizerRef, RoundTrip) {
  for (const char* name : kRealTokenizers) {
    const bool nfc = std::string(name) == "qwen3";
    size_t exact = 0;
    for (const auto& [cname, c] : cases(name).items()) {
      SCOPED_TRACE(std::string(name) + "/" + cname);
      const std::string text = base64Decode(c.at("text").get<std::string>());
      const std::string back = tok(name).decode(tok(name).encode(text));
      const std::string back_plain = tok(name).decode(tok(name).encode(text, false));
      if (nfc && (cname == "accents_nfd" || cname == "hangul_nfd" || cname == "combining_marks")) {
        EXPECT_NE(back, text);  // NFC composed it, as the reference does
        EXPECT_EQ(back, base64Decode(c.at("decoded").get<std::string>()));
      } else {
        EXPECT_EQ(back, toValidUtf8(text));  // x itself when x is valid UTF-8
        exact += back == text;
      }
      EXPECT_EQ(back_plain, back);
    }
    EXPECT_GE(exact, 30u) << name;
  }
}

TEST_F(TokenizerRef, RandomTextRoundTripsAndInvalidBytesNeverCrash) {
  const Tokenizer& llama = tok("llama3");
  const Tokenizer& qwen = tok("qwen3");
  const std::vector<std::string> pieces = {
      "a", "Z", " ", "  ", "\t", "\n", "\r\n", "'s", "'LL", "1", "234", ".", "!?", "<|", "|>",
      "<|begin_of_text|>", "<|im_start|>", "<think>", "é", "e\xCC\x81", "\xE4\xB8\xAD", "\xD0\x96",
      "\xF0\x9F\x91\x8D", "\xF0\x9F\x8F\xBD", "\xE2\x80\x8D", "\xC2\xA0", "\xE2\x80\xA8", "\xEF\xBB\xBF"};
  std::mt19937 rng(1234);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const int n = int(rng() % 40);
    for (int k = 0; k < n; ++k) s += pieces[rng() % pieces.size()];
    ASSERT_EQ(llama.decode(llama.encode(s)), s) << s;
    ASSERT_EQ(llama.decode(llama.encode(s, false)), s) << s;
    EXPECT_TRUE(isValidUtf8(qwen.decode(qwen.encode(s))));
  }
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& ch : s) ch = char(rng());
    std::vector<int32_t> v;
    ASSERT_NO_THROW(v = llama.encode(s));
    EXPECT_EQ(llama.decode(v), toValidUtf8(s));
    ASSERT_NO_THROW(v = qwen.encode(s));
    EXPECT_TRUE(isValidUtf8(qwen.decode(v)));
    EXPECT_EQ(streamDecode(qwen, v, false), qwen.decode(v));
  }
}

TEST_F(TokenizerRef, SpecialTokensAsPlainText) {
  const Tokenizer& llama = tok("llama3");
  const std::string bot = "<|begin_of_text|>";
  EXPECT_EQ(llama.encode(bot), std::vector<int32_t>{128000});
  const auto plain = llama.encode(bot, false);
  ASSERT_GT(plain.size(), 1u);
  std::vector<std::string> pieces;
  for (int32_t id : plain) {
    EXPECT_LT(id, 128000);
    pieces.push_back(*llama.tokenText(id));
  }
  EXPECT_EQ(pieces, (std::vector<std::string>{"<", "|", "begin", "_of", "_text", "|", ">"}));
  EXPECT_EQ(llama.decode(plain), bot);

  const Tokenizer& qwen = tok("qwen3");
  EXPECT_EQ(qwen.encode("<|im_start|>"), std::vector<int32_t>{151644});
  const auto qplain = qwen.encode("<|im_start|>user", false);
  EXPECT_GT(qplain.size(), 2u);
  for (int32_t id : qplain) EXPECT_FALSE(qwen.isSpecial(id));
  EXPECT_EQ(qwen.decode(qplain), "<|im_start|>user");
  // Non-special added tokens are always recognised.
  EXPECT_EQ(qwen.encode("<think>", false), std::vector<int32_t>{151667});
  EXPECT_EQ(qwen.encode("<think>", true), std::vector<int32_t>{151667});
}

TEST_F(TokenizerRef, VocabularyAccessors) {
  const Tokenizer& llama = tok("llama3");
  EXPECT_EQ(llama.vocabSize(), 128256);
  EXPECT_EQ(llama.tokenId("<|begin_of_text|>"), 128000);
  EXPECT_EQ(llama.tokenId("<|eot_id|>"), 128009);
  ASSERT_NE(llama.tokenText(128000), nullptr);
  EXPECT_EQ(*llama.tokenText(128000), "<|begin_of_text|>");
  const auto the = llama.tokenId("\xC4\xA0the");  // "Ġthe"
  ASSERT_TRUE(the.has_value());
  EXPECT_EQ(*llama.tokenText(*the), "\xC4\xA0the");
  EXPECT_EQ(llama.tokenBytes(*the), " the");
  EXPECT_EQ(llama.tokenId("no such token"), std::nullopt);
  EXPECT_EQ(llama.tokenText(-1), nullptr);
  EXPECT_EQ(llama.tokenText(128256), nullptr);
  EXPECT_TRUE(llama.isSpecial(128000));
  EXPECT_FALSE(llama.isSpecial(*the));
  const std::vector<int32_t> with_special = {128000, *the};
  EXPECT_EQ(llama.decode(with_special), "<|begin_of_text|> the");
  EXPECT_EQ(llama.decode(with_special, true), " the");

  const Tokenizer& qwen = tok("qwen3");
  EXPECT_EQ(qwen.vocabSize(), 151669);
  EXPECT_EQ(qwen.tokenId("<|im_start|>"), 151644);
  EXPECT_EQ(qwen.tokenId("<think>"), 151667);
  EXPECT_FALSE(qwen.isSpecial(151667));
  EXPECT_TRUE(qwen.isSpecial(151645));
  // Ids past the tokenizer (a model's padded embedding rows) decode to nothing.
  const std::vector<int32_t> odd = {151700, -5, 151935};
  EXPECT_EQ(qwen.decode(odd), "");
  EXPECT_EQ(qwen.tokenText(151700), nullptr);
}

TEST_F(TokenizerRef, IncrementalDecoderMatchesDecode) {
  size_t held_back = 0;
  for (const char* name : kAllTokenizers) {
    for (const auto& [cname, c] : cases(name).items()) {
      SCOPED_TRACE(std::string(name) + "/" + cname);
      const auto v = ids(c.at("ids"));
      for (bool skip : {false, true}) {
        const std::string whole = tok(name).decode(v, skip);
        const std::string streamed = streamDecode(tok(name), v, skip, &held_back);
        if (isValidUtf8(whole)) {
          EXPECT_EQ(streamed, whole);
        } else {
          EXPECT_EQ(streamed, toValidUtf8(whole));
        }
      }
    }
  }
  EXPECT_GT(held_back, 0u) << "no case split a character across tokens";
}

TEST_F(TokenizerRef, IncrementalDecoderHoldsBackAndReplaces) {
  const Tokenizer& llama = tok("llama3");
  // The one-byte tokens of the byte-level alphabet.
  const auto byteToken = [&](unsigned char b) {
    std::string ch;
    // bytes_to_unicode: printable bytes map to themselves, the others to U+0100 + n.
    uint32_t cp = b, n = 0;
    const auto printable = [](uint32_t x) { return (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE; };
    if (!printable(b)) {
      for (uint32_t x = 0; x < b; ++x) n += !printable(x);
      cp = 256 + n;
    }
    if (cp < 0x80) {
      ch += char(cp);
    } else {
      ch += char(0xC0 | (cp >> 6));
      ch += char(0x80 | (cp & 0x3F));
    }
    const auto id = llama.tokenId(ch);
    EXPECT_TRUE(id.has_value()) << int(b);
    return id.value_or(0);
  };
  IncrementalDecoder d(llama);
  // U+1F44D split over four tokens: nothing until the last byte.
  EXPECT_EQ(d.push(byteToken(0xF0)), "");
  EXPECT_EQ(d.push(byteToken(0x9F)), "");
  EXPECT_EQ(d.push(byteToken(0x91)), "");
  EXPECT_EQ(d.push(byteToken(0x8D)), "\xF0\x9F\x91\x8D");
  // A truncated sequence followed by ASCII: one U+FFFD for the maximal subpart.
  EXPECT_EQ(d.push(byteToken(0xF0)), "");
  EXPECT_EQ(d.push(byteToken(0x9F)), "");
  EXPECT_EQ(d.push(byteToken('a')), "\xEF\xBF\xBD" "a");
  // Bytes that can never start a sequence are replaced at once.
  EXPECT_EQ(d.push(byteToken(0xFF)), "\xEF\xBF\xBD");
  EXPECT_EQ(d.push(byteToken(0x80)), "\xEF\xBF\xBD");
  // flush() replaces what is held back, then starts afresh.
  EXPECT_EQ(d.push(byteToken(0xE4)), "");
  EXPECT_EQ(d.push(byteToken(0xB8)), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.flush(), "");
  EXPECT_EQ(d.push(byteToken('x')), "x");
  // decode() itself keeps the raw bytes.
  const std::vector<int32_t> partial = {byteToken('x'), byteToken(0xE4), byteToken(0xB8)};
  EXPECT_EQ(llama.decode(partial), "x\xE4\xB8");
  // skip_special: special tokens give nothing.
  IncrementalDecoder s(llama, true);
  EXPECT_EQ(s.push(128000), "");
  EXPECT_EQ(s.push(byteToken('y')), "y");
}

TEST_F(TokenizerRef, ConcurrentEncode) {
  const Tokenizer& qwen = tok("qwen3");
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const auto& [cname, c] : cases("qwen3").items()) {
    texts.push_back(base64Decode(c.at("text").get<std::string>()));
    want.push_back(ids(c.at("ids")));
  }
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 20; ++r) {
        for (size_t i = 0; i < texts.size(); ++i) bad[size_t(t)] += qwen.encode(texts[i]) != want[i];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

// --- Things that need no reference files -------------------------------------

TEST(TokenizerUtf8, ReplacementFollowsWhatwg) {
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_TRUE(isValidUtf8("plain ascii"));
  EXPECT_TRUE(isValidUtf8("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x91\x8D\xF4\x8F\xBF\xBF"));
  EXPECT_EQ(toValidUtf8("ok"), "ok");
  EXPECT_EQ(toValidUtf8("\xFF\xFE"), R + R);
  EXPECT_EQ(toValidUtf8("\xC3\x28"), R + "(");
  EXPECT_EQ(toValidUtf8("\xF0\x9F\x98" "end"), R + "end");  // one maximal subpart
  EXPECT_EQ(toValidUtf8("\xED\xA0\x80"), R + R + R);        // surrogate
  EXPECT_EQ(toValidUtf8("\xC0\xAF"), R + R);                // overlong
  EXPECT_EQ(toValidUtf8("\xE0\x80\x80"), R + R + R);        // overlong
  EXPECT_EQ(toValidUtf8("\xF4\x90\x80\x80"), R + R + R + R);  // above U+10FFFF
  EXPECT_EQ(toValidUtf8("\x80\xBF"), R + R);
  EXPECT_EQ(toValidUtf8("a\xE2\x82"), "a" + R);  // truncated at the end
  EXPECT_FALSE(isValidUtf8("a\xE2\x82"));
  EXPECT_FALSE(isValidUtf8("\xED\xA0\x80"));
}

// A small valid byte-level tokenizer.json, to break in various ways.
json minimalTokenizer() {
  json vocab = json::object();
  int n = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? b : 256 + uint32_t(n++);
    std::string ch;
    if (cp < 0x80) {
      ch += char(cp);
    } else {
      ch += char(0xC0 | (cp >> 6));
      ch += char(0x80 | (cp & 0x3F));
    }
    vocab[ch] = b;
  }
  vocab["ab"] = 256;
  vocab["\xC4\xA0" "ab"] = 257;  // "Ġab"
  return json{
      {"added_tokens", json::array({{{"id", 258}, {"content", "<eos>"}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"}, {"pattern", {{"Regex", " ?\\p{L}+|\\s+|."}}}, {"behavior", "Isolated"},
                       {"invert", false}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", json::array({"a b", json::array({"\xC4\xA0", "ab"})})}}},
  };
}

TEST(TokenizerLoad, MinimalTokenizerWorks) {
  const Tokenizer t = Tokenizer::fromJson(minimalTokenizer().dump());
  EXPECT_EQ(t.vocabSize(), 259);
  EXPECT_EQ(t.encode("ab ab<eos>"), (std::vector<int32_t>{256, 257, 258}));
  EXPECT_EQ(t.encode("ab ab<eos>", false).size(), 7u);
  EXPECT_EQ(t.decode(t.encode("ab ab<eos>")), "ab ab<eos>");
}

void expectLoadError(const json& j, const std::string& what) {
  SCOPED_TRACE(what);
  try {
    (void)Tokenizer::fromJson(j.dump());
    ADD_FAILURE() << "no error; expected one mentioning: " << what;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << "got: " << e.what();
  }
}

TEST(TokenizerLoad, MalformedInputsGiveClearErrors) {
  try {
    (void)Tokenizer::fromJson("{\"model\": ");
    ADD_FAILURE() << "no error for truncated JSON";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  expectLoadError(json::array(), "top level is not a JSON object");

  using Edit = void (*)(json&);
  const std::vector<std::pair<Edit, std::string>> cases = {
      {[](json& j) { j.erase("model"); }, "missing the \"model\" object"},
      {[](json& j) { j["model"]["type"] = "Unigram"; }, "model.type \"Unigram\" is not supported"},
      {[](json& j) { j["model"]["vocab"] = json::array(); }, "model.vocab must be an object"},
      {[](json& j) { j["model"]["vocab"]["zz"] = -1; }, "model.vocab[\"zz\"] = -1 is out of range"},
      {[](json& j) { j["model"]["vocab"]["zz"] = "7"; }, "model.vocab[\"zz\"] must be an integer id"},
      {[](json& j) { j["model"]["vocab"]["zz"] = 256; }, "id 256 is given to both"},
      {[](json& j) { j["model"].erase("merges"); }, "model.merges must be an array"},
      {[](json& j) { j["model"]["merges"][0] = "ab"; }, "model.merges[0] \"ab\" is not two tokens"},
      {[](json& j) { j["model"]["merges"][0] = json::array({"a"}); }, "model.merges[0] must be a string"},
      {[](json& j) { j["model"]["merges"][1] = json::array({"a", "nope"}); },
       "model.merges[1]: token \"nope\" is not in the vocabulary"},
      {[](json& j) { j["model"]["merges"].push_back("b a"); }, "merged token \"ba\" is not in the vocabulary"},
      {[](json& j) { j["model"]["dropout"] = 0.1; }, "BPE dropout) is not supported"},
      {[](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, "continuing_subword_prefix \"##\""},
      {[](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "normalizer type \"NFKC\" is not supported"},
      {[](json& j) {
         j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Lowercase"}}})}};
       },
       "normalizer type \"Lowercase\""},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "pre_tokenizer type \"Whitespace\" is not supported"},
      {[](json& j) { j["pre_tokenizer"] = nullptr; }, "pre_tokenizer is null"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); }, "no ByteLevel step"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }, "behavior \"Removed\" is not supported"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }, "invert=true is not supported"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(a"}}; }, "cannot compile"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = 3; }, "pattern must be"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; }, "add_prefix_space=true"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1].erase("add_prefix_space"); }, "add_prefix_space=true"},
      {[](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder type \"WordPiece\" is not supported"},
      {[](json& j) { j["decoder"] = nullptr; }, "decoder is null"},
      {[](json& j) { j["added_tokens"][0].erase("content"); }, "added_tokens[0] has no content"},
      {[](json& j) { j["added_tokens"][0]["id"] = "x"; }, "added_tokens[0].id must be an integer id"},
      {[](json& j) { j["added_tokens"][0]["special"] = "yes"; }, "added_tokens[0].special must be a boolean"},
      {[](json& j) { j["added_tokens"] = json::object(); }, "added_tokens must be an array"},
  };
  for (const auto& [edit, what] : cases) {
    json j = minimalTokenizer();
    edit(j);
    expectLoadError(j, what);
  }
}

TEST(TokenizerLoad, FileErrorsNameThePath) {
  try {
    (void)Tokenizer::fromFile("/nonexistent/dir/tokenizer.json");
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.json"), std::string::npos) << e.what();
  }
  const std::string path = ::testing::TempDir() + "llmc_bad_tokenizer.json";
  {
    std::ofstream out(path);
    json j = minimalTokenizer();
    j["model"]["type"] = "WordPiece";
    out << j.dump();
  }
  try {
    (void)Tokenizer::fromFile(path);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.type \"WordPiece\""), std::string::npos) << msg;
  }
  std::remove(path.c_str());
}

}  // namespace
