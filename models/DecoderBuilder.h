// DecoderConfig -> llm dialect: one forward step of a Llama/Qwen2 decoder.
#pragma once

#include "models/ModelConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

namespace llmc::models {

struct BuildOptions {
  std::string dtype;          // compute dtype (bf16, f16, f32); empty: the checkpoint's
  int64_t max_seq_len = 0;    // 0: max_position_embeddings
  int64_t kv_page_size = 16;  // tokens per KV-cache page
};

/// Builds `func.func @forward(%token_ids, %positions) -> logits` in the llm
/// dialect, with the model's facts in the module's `llm.model` dictionary.
mlir::OwningOpRef<mlir::ModuleOp> buildDecoder(mlir::MLIRContext &context,
                                               const DecoderConfig &config,
                                               const BuildOptions &options);

} // namespace llmc::models
