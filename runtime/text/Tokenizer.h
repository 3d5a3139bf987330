// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the Llama 3
// and Qwen2/2.5/3 tokenizers, and any other file built from the same parts).
//
// Reference: Hugging Face `tokenizers` (the Rust library behind transformers'
// fast tokenizers, vLLM and TGI). encode() gives its ids for
// `encode(text, add_special_tokens=false)`, decode() its text for valid UTF-8.
// test/text/expected.json holds its ids (and transformers.js's where they
// differ) for a varied corpus; test/text/README.md lists the known differences
// between the two references.
//
// Pipeline of encode(text, allow_special):
//  1. Invalid UTF-8 is replaced the way a WHATWG TextDecoder (and Rust's
//     String::from_utf8_lossy) does: each maximal invalid subpart becomes one
//     U+FFFD. (Neither reference can take invalid UTF-8: Rust needs a String;
//     a JS caller gets exactly this replacement from TextDecoder.)
//  2. Added tokens are split out, leftmost-longest, at any position (the
//     non-`normalized` ones on the raw text, then the `normalized` ones on the
//     normalized pieces), honouring lstrip/rstrip/single_word. Special added
//     tokens are recognised only when allow_special is true; otherwise their
//     text is ordinary text (Hugging Face's encode_special_tokens=true).
//     Non-special added tokens are always recognised.
//  3. Each remaining piece is normalized (none or NFC, through ICU).
//  4. Pre-tokenization: each Split of the pre_tokenizer Sequence (PCRE2 with
//     UTF+UCP, JIT-compiled; `\s`/`\S` are rewritten to the Unicode White_Space
//     set the reference's regex engine uses), then ByteLevel (with use_regex,
//     GPT-2's split pattern first).
//  5. BPE per pre-token on its bytes: with ignore_merges a pre-token that is
//     itself a vocabulary entry is emitted whole; otherwise the lowest-rank
//     pair is merged first (leftmost on ties) until no merge applies. Results
//     are cached per pre-token in a bounded, mutex-guarded map.
// No special tokens are added (no BOS): that is the caller's business.
//
// decode(ids) concatenates each token's bytes (the byte-level alphabet mapped
// back to bytes; a token whose text is not made of that alphabet, e.g. an
// added token containing '\n', contributes its UTF-8 text, as in the
// reference) and returns them raw: ids ending inside a UTF-8 sequence give
// those bytes, not U+FFFD (the references return U+FFFD there). Ids outside
// the vocabulary (e.g. padding rows of a model's embedding) are skipped, as
// the reference does. clean_up_tokenization_spaces is not applied (the Rust
// library never applies it; transformers and transformers.js do when
// tokenizer_config.json says so).
//
// Unsupported parts of a tokenizer.json (another model type, normalizer,
// pre-tokenizer, decoder, BPE dropout, ...) make fromJson throw a
// std::runtime_error naming the part. post_processor is ignored (it only adds
// special tokens).
//
// A Tokenizer is immutable after loading (copies share it) and encode/decode
// may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmc::text {

class Tokenizer {
 public:
  /// Reads and parses a tokenizer.json. Throws std::runtime_error (naming the
  /// file) when it cannot be read or is not a supported tokenizer.
  static Tokenizer fromFile(const std::string& path);
  /// Parses the contents of a tokenizer.json; throws std::runtime_error.
  static Tokenizer fromJson(const std::string& json);

  /// Token ids of text (any bytes; see step 1 above for invalid UTF-8).
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  /// The bytes the ids stand for (raw: may end in an incomplete UTF-8
  /// sequence). skip_special leaves out special added tokens.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  /// The id of a token given as it is written in tokenizer.json (byte-level
  /// form for vocabulary entries, e.g. "Ġthe"; content for added tokens).
  std::optional<int32_t> tokenId(std::string_view token) const;
  /// The token as written in tokenizer.json, or nullptr for an id without one.
  const std::string* tokenText(int32_t id) const;
  /// One past the largest id of the vocabulary and the added tokens.
  int32_t vocabSize() const;

  /// Whether id is a special added token (skipped by decode(..., true)).
  bool isSpecial(int32_t id) const;
  /// The bytes id decodes to; empty for an id without a token.
  std::string_view tokenBytes(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

/// Streaming detokenizer: push() returns the text completed by each new token
/// and never a broken UTF-8 sequence. Bytes that may still become a valid
/// sequence are held back; bytes that cannot (invalid lead or continuation
/// bytes) are replaced by U+FFFD at once, one per maximal invalid subpart.
/// flush() returns what is held back, an incomplete sequence as one U+FFFD,
/// and resets the decoder. So the concatenation of all results equals
/// decode(ids) whenever that is valid UTF-8, and otherwise equals its lossy
/// conversion (what the references' decode returns).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string flush();

 private:
  Tokenizer tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: the start of a possibly valid sequence
};

/// True when bytes are well-formed UTF-8 (no surrogates, overlongs or values
/// above U+10FFFF).
bool isValidUtf8(std::string_view bytes);
/// bytes with every maximal invalid subpart replaced by U+FFFD (WHATWG
/// "decode with replacement", the same as Rust's from_utf8_lossy).
std::string toValidUtf8(std::string_view bytes);

}  // namespace llmc::text
