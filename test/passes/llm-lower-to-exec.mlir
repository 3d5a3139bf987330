// RUN: llmc-opt %s -split-input-file -llm-lower-to-exec -verify-diagnostics | FileCheck %s

// A fused one-layer forward becomes kernels, weights, buffers and launches;
// the tied embedding is one weight used by the embedding and the LM head.
// CHECK-LABEL: module attributes
// CHECK-DAG: exec.kernel @embedding_16_bf16 {{{.*}}kernel_template = "embedding", params = array<i64: 16>
// CHECK-DAG: exec.kernel @rms_norm_16_bf16 {{{.*}}kernel_template = "rms_norm"
// CHECK-DAG: exec.kernel @rope_kv_write_2_1_8_8_16_bf16 {{{.*}}grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<constant = 1>]{{.*}}params = array<i64: 2, 1, 8, 8, 16>
// CHECK-DAG: exec.kernel @paged_attention_2_1_8_16_bf16 {{{.*}}grid = [#exec.sym<tokens = 1, seqs = 7, divisor = 8>, #exec.sym<constant = 1>, #exec.sym<constant = 1>]{{.*}}max_cluster = 16
// CHECK-DAG: exec.kernel @silu_mul_32_bf16
// CHECK-DAG: exec.kernel @gather_rows_16_bf16 {{{.*}}grid = [#exec.sym<seqs = 1>
// CHECK: func.func @forward() {
// CHECK-DAG: %[[IDS:.*]] = exec.input "token_ids" : <tokens, 1, i32>
// CHECK-DAG: %[[POS:.*]] = exec.input "positions" : <tokens, 1, i32>
// CHECK-DAG: %[[EMB:.*]] = exec.weight ["embed"] {source_shapes = [array<i64: 64, 16>]} : memref<64x16xbf16>
// CHECK-DAG: %[[WQKV:.*]] = exec.weight ["q", "k", "v"] {source_shapes = [array<i64: 16, 16>, array<i64: 8, 16>, array<i64: 8, 16>]} : memref<32x16xbf16>
// CHECK-DAG: %[[K:.*]], %[[V:.*]] = exec.kv_cache 0
// CHECK-DAG: %[[FREQ:.*]] = exec.constant dense<[1.000000e+00, 1.000000e-01, 0.00999999977, 1.000000e-03]> : tensor<4xf32> : memref<4xf32>
// CHECK-DAG: %[[ROWS:.*]] = exec.input "logits_rows" : <seqs, 1, i32>
// CHECK: %[[X:.*]] = exec.alloc : <tokens, 16, bf16>
// CHECK: exec.launch @embedding_16_bf16(%[[IDS]], %[[EMB]], %[[X]]) scalars ["tokens"]
// CHECK: %[[N:.*]] = exec.alloc : <tokens, 16, bf16>
// CHECK: exec.launch @rms_norm_16_bf16(%[[X]], %{{.*}}, %[[N]]) scalars [9.99999974E-6 : f32, "tokens"]
// CHECK: %[[QKV:.*]] = exec.alloc : <tokens, 32, bf16>
// CHECK: exec.gemm %[[N]], %[[WQKV]] -> %[[QKV]]
// CHECK: %[[Q:.*]] = exec.alloc : <tokens, 16, bf16>
// CHECK: exec.launch @rope_kv_write_2_1_8_8_16_bf16(%[[QKV]], %[[POS]], %{{.*}}, %{{.*}}, %{{.*}}, %[[FREQ]], %[[Q]], %[[K]], %[[V]]) scalars ["tokens", "seqs"]
// CHECK: %[[A:.*]] = exec.alloc : <tokens, 16, bf16>
// CHECK: exec.launch @paged_attention_2_1_8_16_bf16(%[[Q]], %[[K]], %[[V]], %[[POS]], {{.*}}, %[[A]]) scalars [3.500000e-01 : f32, 0 : i32, "tokens", "seqs"]
// CHECK: exec.launch @add_rms_norm_16_bf16
// CHECK: exec.launch @silu_mul_32_bf16
// CHECK: %[[H:.*]] = exec.alloc : <seqs, 16, bf16>
// CHECK: exec.launch @gather_rows_16_bf16(%{{.*}}, %[[ROWS]], %[[H]]) scalars ["seqs"]
// CHECK: %[[L:.*]] = exec.alloc : <seqs, 64, f32>
// CHECK: exec.gemm %[[H]], %[[EMB]] -> %[[L]]
// CHECK: exec.output "logits", %[[L]]
// CHECK-NOT: llm.
module attributes {llm.model = {kv_page_size = 16 : i64}} {
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x64xf32> {
    %emb = llm.param "embed" : tensor<64x16xbf16>
    %n1 = llm.param "norm1" : tensor<16xbf16>
    %wq = llm.param "q" : tensor<16x16xbf16>
    %wk = llm.param "k" : tensor<8x16xbf16>
    %wv = llm.param "v" : tensor<8x16xbf16>
    %wo = llm.param "o" : tensor<16x16xbf16>
    %n2 = llm.param "norm2" : tensor<16xbf16>
    %wg = llm.param "gate" : tensor<32x16xbf16>
    %wu = llm.param "up" : tensor<32x16xbf16>
    %wd = llm.param "down" : tensor<16x32xbf16>
    %nf = llm.param "final" : tensor<16xbf16>
    %wqkv = llm.concat %wq, %wk, %wv {axis = 0 : i64} : (tensor<16x16xbf16>, tensor<8x16xbf16>, tensor<8x16xbf16>) -> tensor<32x16xbf16>
    %wgu = llm.concat %wg, %wu {axis = 0 : i64} : (tensor<32x16xbf16>, tensor<32x16xbf16>) -> tensor<64x16xbf16>
    %x = llm.embedding %emb, %ids : (tensor<64x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    %h = llm.rms_norm %x, %n1 {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
    %qkv = llm.linear %h, %wqkv : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xbf16>
    %q = llm.rope_kv_write %qkv, %pos {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x32xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    %a = llm.paged_attention %q {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35 : f64} : (tensor<?x16xbf16>) -> tensor<?x16xbf16>
    %o = llm.linear %a, %wo : (tensor<?x16xbf16>, tensor<16x16xbf16>) -> tensor<?x16xbf16>
    %s, %m = llm.add_rms_norm %x, %o, %n2 {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<?x16xbf16>, tensor<16xbf16>) -> (tensor<?x16xbf16>, tensor<?x16xbf16>)
    %gu = llm.linear %m, %wgu : (tensor<?x16xbf16>, tensor<64x16xbf16>) -> tensor<?x64xbf16>
    %act = llm.gated_silu %gu : (tensor<?x64xbf16>) -> tensor<?x32xbf16>
    %d = llm.linear %act, %wd : (tensor<?x32xbf16>, tensor<16x32xbf16>) -> tensor<?x16xbf16>
    %s2, %f = llm.add_rms_norm %s, %d, %nf {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<?x16xbf16>, tensor<16xbf16>) -> (tensor<?x16xbf16>, tensor<?x16xbf16>)
    %l = llm.logits %f, %emb : (tensor<?x16xbf16>, tensor<64x16xbf16>) -> tensor<?x64xf32>
    return %l : tensor<?x64xf32>
  }
}

// -----

// Llama 3.1 rope scaling is folded into the frequency table: the fastest
// frequency is kept, the slowest divided by the factor, the middle two blended
// (values from Hugging Face's _compute_llama3_parameters).
// CHECK-LABEL: module attributes
// CHECK: exec.constant dense<[1.000000e+00, 0.244384602, 0.0130422562, 0.00395284686]> : tensor<4xf32>
module attributes {llm.model = {kv_page_size = 16 : i64}} {
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x64xf32> {
    %emb = llm.param "embed" : tensor<64x16xbf16>
    %x = llm.embedding %emb, %ids : (tensor<64x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    %wqkv = llm.param "qkv" : tensor<32x16xbf16>
    %qkv = llm.linear %x, %wqkv : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xbf16>
    %q = llm.rope_kv_write %qkv, %pos {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 100.0, rotary_dim = 8, scaling = "llama3", factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_positions = 64>} : (tensor<?x32xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    %l = llm.logits %q, %emb : (tensor<?x16xbf16>, tensor<64x16xbf16>) -> tensor<?x64xf32>
    return %l : tensor<?x64xf32>
  }
}

// -----

// Ops that only exist to be fused have no kernel.
module attributes {llm.model = {kv_page_size = 16 : i64}} {
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x64xf32> {
    %emb = llm.param "embed" : tensor<64x16xbf16>
    %x = llm.embedding %emb, %ids : (tensor<64x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    // expected-error @+1 {{has no kernel of its own; run the llm fusion passes before llm-lower-to-exec}}
    %r = llm.rope %x, %pos {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    %l = llm.logits %r, %emb : (tensor<?x16xbf16>, tensor<64x16xbf16>) -> tensor<?x64xf32>
    return %l : tensor<?x64xf32>
  }
}

// -----

// The KV page size comes from the module's llm.model dictionary.
// expected-error @+1 {{module needs an llm.model dictionary with a positive kv_page_size}}
module {
  func.func @forward(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x64xf32> {
    %emb = llm.param "embed" : tensor<64x16xbf16>
    %x = llm.embedding %emb, %ids : (tensor<64x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
    %l = llm.logits %x, %emb : (tensor<?x16xbf16>, tensor<64x16xbf16>) -> tensor<?x64xf32>
    return %l : tensor<?x64xf32>
  }
}
