// Encode/decode throughput of runtime/text/Tokenizer on 1 MB of English (one
// paragraph repeated). Not a test: prints MB/s.
//
//   g++ -std=c++20 -O2 -I. runtime/text/Tokenizer.cpp test/text/tokenizer_bench.cpp
//       -lpcre2-8 -licuuc -o /tmp/tokenizer_bench     (one line)
//   /tmp/tokenizer_bench /tmp/tok/llama3/tokenizer.json [/tmp/tok/qwen3/tokenizer.json ...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/text/Tokenizer.h"

namespace {

double seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON...\n", argv[0]);
    return 2;
  }
  const std::string paragraph =
      "The history of natural language processing generally started in the 1950s, although "
      "work can be found from earlier periods. In 1950, Alan Turing published an article "
      "titled \"Computing Machinery and Intelligence\" which proposed what is now called the "
      "Turing test as a criterion of intelligence. It's a test of a machine's ability to "
      "exhibit intelligent behaviour equivalent to, or indistinguishable from, that of a "
      "human; the evaluator would be aware that one of the two partners in conversation was "
      "a machine, and all participants would be separated from one another.\n\n";
  std::string text;
  while (text.size() < (1u << 20)) text += paragraph;
  text.resize(1u << 20);
  const double mb = double(text.size()) / double(1u << 20);

  for (int a = 1; a < argc; ++a) {
    const auto t0 = std::chrono::steady_clock::now();
    const llmc::text::Tokenizer tok = llmc::text::Tokenizer::fromFile(argv[a]);
    const auto t1 = std::chrono::steady_clock::now();
    std::vector<int32_t> ids = tok.encode(text);  // first run: empty word cache
    const auto t2 = std::chrono::steady_clock::now();
    double best = 1e9;
    for (int r = 0; r < 5; ++r) {
      const auto s = std::chrono::steady_clock::now();
      ids = tok.encode(text);
      best = std::min(best, seconds(s, std::chrono::steady_clock::now()));
    }
    double best_dec = 1e9;
    size_t out_bytes = 0;
    for (int r = 0; r < 5; ++r) {
      const auto s = std::chrono::steady_clock::now();
      out_bytes = tok.decode(ids).size();
      best_dec = std::min(best_dec, seconds(s, std::chrono::steady_clock::now()));
    }
    std::printf("%s\n  load %.3f s, %zu tokens for %.2f MB\n", argv[a], seconds(t0, t1), ids.size(), mb);
    std::printf("  encode first run %.4f s (%.1f MB/s), best of 5 %.4f s (%.1f MB/s)\n", seconds(t1, t2),
                mb / seconds(t1, t2), best, mb / best);
    std::printf("  decode %.4f s (%.1f MB/s)%s\n", best_dec, mb / best_dec,
                out_bytes == text.size() ? "" : "  ROUND TRIP MISMATCH");
  }
  return 0;
}
