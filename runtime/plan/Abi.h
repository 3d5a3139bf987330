// The fixed forward ABI: the arrays every plan's forward reads, with their
// symbolic lengths. The compiler's exec.input ops and the runtime's executor
// both use this list.
#pragma once

#include <string_view>

namespace llmc::plan {

struct AbiInput {
  const char *name;
  const char *rows;  // tokens (T), seqs (S), seqs_plus_one (S + 1) or pages
};

// The page table comes last: it is the longest array, and the executor
// uploads it only as far as it is used.
inline constexpr AbiInput kAbiInputs[] = {
    {"token_ids", "tokens"},      {"positions", "tokens"},
    {"qo_indptr", "seqs_plus_one"}, {"kv_indptr", "seqs_plus_one"},
    {"kv_last_page_len", "seqs"}, {"logits_rows", "seqs"},
    {"kv_page_indices", "pages"},
};

} // namespace llmc::plan
