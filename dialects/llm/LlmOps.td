//===- LlmOps.td - the llm dialect: one forward step of a decoder ---------===//
//
// The llm dialect describes one forward step of a decoder-only model over a
// ragged batch of T tokens (T is the dynamic leading dimension of every
// activation tensor). Weights are `llm.param` values named after checkpoint
// tensors. Attention reads and writes the paged KV cache; the page tables are
// part of the fixed forward ABI, so they do not appear as operands.
//
//===----------------------------------------------------------------------===//

#ifndef LLMC_DIALECTS_LLM_LLMOPS_TD
#define LLMC_DIALECTS_LLM_LLMOPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def Llm_Dialect : Dialect {
  let name = "llm";
  let summary = "Model graph of one forward step over a ragged token batch";
  let description = [{
    Ops for embedding, normalisation, projections, rotary embedding, paged
    attention and the MLP of Llama/Qwen2-style decoders, plus the fused forms
    that the llm fusion passes create. Activations are `tensor<?xNxdtype>`
    with the token count T as the dynamic leading dimension.
  }];
  let cppNamespace = "::llmc::llm";
  let useDefaultAttributePrinterParser = 1;
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

def Llm_RopeAttr : AttrDef<Llm_Dialect, "Rope"> {
  let mnemonic = "rope";
  let summary = "Rotary position embedding parameters";
  let description = [{
    `theta` is the base, `rotary_dim` the number of leading head dimensions
    that rotate (pairs i and i + rotary_dim/2, Hugging Face's rotate_half).
    `scaling` is "none" or "llama3"; for "llama3" the Llama 3.1 frequency
    scaling uses `factor`, `low_freq_factor`, `high_freq_factor` and
    `original_max_positions`.

    ```mlir
    #llm.rope<theta = 500000.0, rotary_dim = 128, scaling = "llama3",
              factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0,
              original_max_positions = 8192>
    ```
  }];
  let parameters = (ins
    APFloatParameter<"base">:$theta,
    "int64_t":$rotary_dim,
    StringRefParameter<"none or llama3">:$scaling,
    APFloatParameter<"">:$factor,
    APFloatParameter<"">:$low_freq_factor,
    APFloatParameter<"">:$high_freq_factor,
    "int64_t":$original_max_positions
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Inverse frequencies of the rotary_dim/2 rotating pairs, with scaling.
    std::vector<float> inverseFrequencies() const;
  }];
}

//===----------------------------------------------------------------------===//
// Op base and type constraints
//===----------------------------------------------------------------------===//

class Llm_Op<string mnemonic, list<Trait> traits = []>
    : Op<Llm_Dialect, mnemonic, traits>;

def Llm_FloatTensor : TensorOf<[F32, F16, BF16]>;
def Llm_IdTensor : 1DTensorOf<[I32]>;
def Llm_Weight : TensorOf<[F32, F16, BF16]>;

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

def Llm_ParamOp : Llm_Op<"param", [Pure]> {
  let summary = "A weight tensor bound from the checkpoint at load time";
  let description = [{
    `name` is the tensor's name in the checkpoint. The result type is the
    shape and the compute dtype; the checkpoint's own dtype is converted at
    load time.

    ```mlir
    %w = llm.param "model.norm.weight" : tensor<4096xbf16>
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs Llm_Weight:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Llm_ConcatOp : Llm_Op<"concat", [Pure]> {
  let summary = "Concatenation of weights along one axis";
  let description = [{
    Created by projection fusion: the fused weight is the concatenation of the
    original weights, done once at load time.

    ```mlir
    %w = llm.concat %wq, %wk, %wv {axis = 0 : i64}
        : (tensor<4096x4096xbf16>, tensor<1024x4096xbf16>, tensor<1024x4096xbf16>)
        -> tensor<6144x4096xbf16>
    ```
  }];
  let arguments = (ins Variadic<Llm_Weight>:$inputs, I64Attr:$axis);
  let results = (outs Llm_Weight:$result);
  let assemblyFormat = "$inputs attr-dict `:` functional-type($inputs, $result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Activations
//===----------------------------------------------------------------------===//

def Llm_EmbeddingOp : Llm_Op<"embedding", [Pure]> {
  let summary = "Rows of the embedding table for each token id";
  let arguments = (ins Llm_Weight:$table, Llm_IdTensor:$token_ids);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = [{
    $table `,` $token_ids attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_RmsNormOp : Llm_Op<"rms_norm", [Pure]> {
  let summary = "RMS normalisation of each row, scaled by a weight";
  let arguments = (ins Llm_FloatTensor:$input, Llm_Weight:$weight, F64Attr:$eps);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_AddOp : Llm_Op<"add", [Pure, SameOperandsAndResultType]> {
  let summary = "Elementwise sum (residual connections)";
  let arguments = (ins Llm_FloatTensor:$lhs, Llm_FloatTensor:$rhs);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def Llm_AddRmsNormOp : Llm_Op<"add_rms_norm", [Pure]> {
  let summary = "Fused residual add and RMS normalisation";
  let description = [{
    `sum = lhs + rhs` (rounded to the activation dtype) and
    `normed = rms_norm(sum) * weight`, in one pass over the row.
  }];
  let arguments = (ins Llm_FloatTensor:$lhs, Llm_FloatTensor:$rhs,
                       Llm_Weight:$weight, F64Attr:$eps);
  let results = (outs Llm_FloatTensor:$sum, Llm_FloatTensor:$normed);
  let assemblyFormat = [{
    $lhs `,` $rhs `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_LinearOp : Llm_Op<"linear", [Pure]> {
  let summary = "y = x * weight^T (+ bias), weight in [out, in] layout";
  let arguments = (ins Llm_FloatTensor:$input, Llm_Weight:$weight,
                       Optional<Llm_Weight>:$bias);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_SplitOp : Llm_Op<"split", [Pure]> {
  let summary = "Split the columns of an activation into consecutive parts";
  let arguments = (ins Llm_FloatTensor:$input);
  let results = (outs Variadic<Llm_FloatTensor>:$results);
  let assemblyFormat = "$input attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llm_RopeOp : Llm_Op<"rope", [Pure]> {
  let summary = "Rotary position embedding of every head of every token";
  let arguments = (ins Llm_FloatTensor:$input, Llm_IdTensor:$positions,
                       I64Attr:$num_heads, I64Attr:$head_dim, Llm_RopeAttr:$rope);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $positions attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_AttentionOp : Llm_Op<"attention", [MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "Causal attention that appends k and v to the paged KV cache";
  let description = [{
    Writes this step's `key` and `value` rows into layer `layer` of the paged
    KV cache, then attends each query row over its sequence's cached keys up
    to its own position (causal; only the last `sliding_window` positions
    when it is non-zero). GQA when num_kv_heads divides num_heads.
  }];
  let arguments = (ins Llm_FloatTensor:$query, Llm_FloatTensor:$key,
                       Llm_FloatTensor:$value, I64Attr:$layer, I64Attr:$num_heads,
                       I64Attr:$num_kv_heads, I64Attr:$head_dim, F64Attr:$scale,
                       DefaultValuedAttr<I64Attr, "0">:$sliding_window);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_RopeKvWriteOp : Llm_Op<"rope_kv_write", [MemoryEffects<[MemWrite]>]> {
  let summary = "Fused rotary embedding of q and k with the KV-cache append";
  let description = [{
    Reads the fused q|k|v projection rows, rotates q and k, writes k and v
    into layer `layer` of the paged KV cache and returns the rotated queries.
  }];
  let arguments = (ins Llm_FloatTensor:$qkv, Llm_IdTensor:$positions,
                       I64Attr:$layer, I64Attr:$num_heads, I64Attr:$num_kv_heads,
                       I64Attr:$head_dim, Llm_RopeAttr:$rope);
  let results = (outs Llm_FloatTensor:$query);
  let assemblyFormat = [{
    $qkv `,` $positions attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Llm_PagedAttentionOp : Llm_Op<"paged_attention", [MemoryEffects<[MemRead]>]> {
  let summary = "Causal attention over keys and values already in the KV cache";
  let arguments = (ins Llm_FloatTensor:$query, I64Attr:$layer, I64Attr:$num_heads,
                       I64Attr:$num_kv_heads, I64Attr:$head_dim, F64Attr:$scale,
                       DefaultValuedAttr<I64Attr, "0">:$sliding_window);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = "$query attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llm_SiluMulOp : Llm_Op<"silu_mul", [Pure, SameOperandsAndResultType]> {
  let summary = "silu(gate) * up";
  let arguments = (ins Llm_FloatTensor:$gate, Llm_FloatTensor:$up);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($result)";
}

def Llm_GatedSiluOp : Llm_Op<"gated_silu", [Pure]> {
  let summary = "silu(gate) * up on a fused gate|up projection";
  let description = [{
    The input row holds the gate columns, then the up columns. Created by
    fusing `llm.silu_mul` with the split of the fused gate/up projection, so
    the split costs nothing and one kernel reads the projection once.
  }];
  let arguments = (ins Llm_FloatTensor:$gate_up);
  let results = (outs Llm_FloatTensor:$result);
  let assemblyFormat = "$gate_up attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Llm_LogitsOp : Llm_Op<"logits", [Pure]> {
  let summary = "fp32 logits of the rows named by the ABI's logits_rows";
  let description = [{
    Gathers one hidden row per sequence (the ABI's `logits_rows[S]`) and
    multiplies by the LM head; the result's leading dimension is S.
  }];
  let arguments = (ins Llm_FloatTensor:$hidden, Llm_Weight:$lm_head);
  let results = (outs TensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $hidden `,` $lm_head attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

#endif // LLMC_DIALECTS_LLM_LLMOPS_TD
