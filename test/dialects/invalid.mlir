// RUN: llmc-opt %s -split-input-file -verify-diagnostics
// Verifier errors of the llm and exec dialects.

// A parameter needs a checkpoint tensor name.
func.func @param_without_name() {
  // expected-error @+1 {{needs a non-empty checkpoint tensor name}}
  %w = llm.param "" : tensor<4xbf16>
  return
}

// -----

// Parameters have static shapes.
func.func @dynamic_param() {
  // expected-error @+1 {{result must be a static rank-1 or rank-2 tensor}}
  %w = llm.param "w" : tensor<?x4xbf16>
  return
}

// -----

// Concatenated weights agree off the concat axis.
func.func @concat_mismatch() {
  %a = llm.param "a" : tensor<4x8xbf16>
  %b = llm.param "b" : tensor<4x16xbf16>
  // expected-error @+1 {{inputs differ in dimension 1 (not the concat axis)}}
  %c = llm.concat %a, %b {axis = 0 : i64} : (tensor<4x8xbf16>, tensor<4x16xbf16>) -> tensor<8x8xbf16>
  return
}

// -----

// Activations have a dynamic token dimension.
func.func @static_activation(%x: tensor<4x16xbf16>) {
  %w = llm.param "w" : tensor<16xbf16>
  // expected-error @+1 {{input must be a tensor<?xNxdtype> activation}}
  %y = llm.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<4x16xbf16>, tensor<16xbf16>) -> tensor<4x16xbf16>
  return
}

// -----

// The embedding result has the table's width.
func.func @embedding_width(%ids: tensor<?xi32>) {
  %t = llm.param "t" : tensor<32x16xbf16>
  // expected-error @+1 {{result has 8 columns, expected 16}}
  %x = llm.embedding %t, %ids : (tensor<32x16xbf16>, tensor<?xi32>) -> tensor<?x8xbf16>
  return
}

// -----

// RMS norm weights match the hidden size.
func.func @norm_weight(%x: tensor<?x16xbf16>) {
  %w = llm.param "w" : tensor<8xbf16>
  // expected-error @+1 {{weight size 8 does not match hidden size 16}}
  %y = llm.rms_norm %x, %w {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<8xbf16>) -> tensor<?x16xbf16>
  return
}

// -----

// RMS norm epsilon is positive.
func.func @norm_eps(%x: tensor<?x16xbf16>) {
  %w = llm.param "w" : tensor<16xbf16>
  // expected-error @+1 {{eps must be positive}}
  %y = llm.rms_norm %x, %w {eps = 0.0 : f64} : (tensor<?x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
  return
}

// -----

// A linear weight takes the input's features.
func.func @linear_features(%x: tensor<?x16xbf16>) {
  %w = llm.param "w" : tensor<8x12xbf16>
  // expected-error @+1 {{weight [8, 12] does not take 16 input features}}
  %y = llm.linear %x, %w : (tensor<?x16xbf16>, tensor<8x12xbf16>) -> tensor<?x8xbf16>
  return
}

// -----

// A linear bias has one entry per output feature.
func.func @linear_bias(%x: tensor<?x16xbf16>) {
  %w = llm.param "w" : tensor<8x16xbf16>
  %b = llm.param "b" : tensor<4xbf16>
  // expected-error @+1 {{bias size 4 does not match 8 output features}}
  %y = llm.linear %x, %w bias %b : (tensor<?x16xbf16>, tensor<8x16xbf16>, tensor<4xbf16>) -> tensor<?x8xbf16>
  return
}

// -----

// A linear keeps the activation dtype.
func.func @linear_dtype(%x: tensor<?x16xbf16>) {
  %w = llm.param "w" : tensor<8x16xf16>
  // expected-error @+1 {{weight element type 'f16' differs from 'bf16'}}
  %y = llm.linear %x, %w : (tensor<?x16xbf16>, tensor<8x16xf16>) -> tensor<?x8xbf16>
  return
}

// -----

// Split results cover the input's columns exactly.
func.func @split_cover(%x: tensor<?x16xbf16>) {
  // expected-error @+1 {{results cover 12 columns, input has 16}}
  %a, %b = llm.split %x : (tensor<?x16xbf16>) -> (tensor<?x8xbf16>, tensor<?x4xbf16>)
  return
}

// -----

// Only the default and llama3 rope scalings exist.
func.func @rope_scaling(%x: tensor<?x16xbf16>, %p: tensor<?xi32>) {
  // expected-error @+1 {{rope scaling must be "none" or "llama3", got "yarn"}}
  %y = llm.rope %x, %p {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8, scaling = "yarn">} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  return
}

// -----

// The rotary dimension is even.
func.func @rope_odd(%x: tensor<?x16xbf16>, %p: tensor<?xi32>) {
  // expected-error @+1 {{rope rotary_dim must be positive and even, got 7}}
  %y = llm.rope %x, %p {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 7>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  return
}

// -----

// The rotary dimension fits in a head.
func.func @rope_too_wide(%x: tensor<?x16xbf16>, %p: tensor<?xi32>) {
  // expected-error @+1 {{rope rotary_dim 16 exceeds head_dim 8}}
  %y = llm.rope %x, %p {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 16>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  return
}

// -----

// llama3 scaling needs low < high frequency factors.
func.func @rope_llama3_factors(%x: tensor<?x16xbf16>, %p: tensor<?xi32>) {
  // expected-error @+1 {{llama3 rope needs 0 < low_freq_factor < high_freq_factor}}
  %y = llm.rope %x, %p {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8, scaling = "llama3", factor = 8.0, low_freq_factor = 4.0, high_freq_factor = 1.0, original_max_positions = 8192>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  return
}

// -----

// GQA needs num_heads to be a multiple of num_kv_heads.
func.func @attention_groups(%q: tensor<?x24xbf16>, %k: tensor<?x16xbf16>) {
  // expected-error @+1 {{num_heads (3) must be a multiple of num_kv_heads (2)}}
  %o = llm.attention %q, %k, %k {layer = 0 : i64, num_heads = 3 : i64, num_kv_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35 : f64} : (tensor<?x24xbf16>, tensor<?x16xbf16>, tensor<?x16xbf16>) -> tensor<?x24xbf16>
  return
}

// -----

// Keys have num_kv_heads x head_dim columns.
func.func @attention_key_width(%q: tensor<?x16xbf16>, %k: tensor<?x16xbf16>, %v: tensor<?x8xbf16>) {
  // expected-error @+1 {{key has 16 columns, expected 8}}
  %o = llm.attention %q, %k, %v {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35 : f64} : (tensor<?x16xbf16>, tensor<?x16xbf16>, tensor<?x8xbf16>) -> tensor<?x16xbf16>
  return
}

// -----

// The attention scale is positive.
func.func @attention_scale(%q: tensor<?x16xbf16>) {
  // expected-error @+1 {{scale must be positive}}
  %o = llm.paged_attention %q {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = -1.0 : f64} : (tensor<?x16xbf16>) -> tensor<?x16xbf16>
  return
}

// -----

// The fused q|k|v input holds (heads + 2 kv heads) x head_dim columns.
func.func @rope_kv_write_width(%qkv: tensor<?x24xbf16>, %p: tensor<?xi32>) {
  // expected-error @+1 {{qkv has 24 columns, expected 32}}
  %q = llm.rope_kv_write %qkv, %p {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x24xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  return
}

// -----

// gated_silu halves the columns.
func.func @gated_silu_width(%x: tensor<?x16xbf16>) {
  // expected-error @+1 {{gate_up has 16 columns, expected 12}}
  %y = llm.gated_silu %x : (tensor<?x16xbf16>) -> tensor<?x6xbf16>
  return
}

// -----

// The LM head takes the hidden size.
func.func @logits_head(%h: tensor<?x16xbf16>) {
  %w = llm.param "w" : tensor<32x8xbf16>
  // expected-error @+1 {{lm_head takes 8 features, hidden has 16}}
  %l = llm.logits %h, %w : (tensor<?x16xbf16>, tensor<32x8xbf16>) -> tensor<?x32xf32>
  return
}

// -----

// Buffer rows are one of the forward's symbolic sizes.
// expected-error @+1 {{buffer rows must be tokens, seqs, seqs_plus_one or pages, got 'layers'}}
func.func private @bad_rows(!exec.buf<layers, 4, bf16>)

// -----

// Inputs are the forward ABI's arrays.
func.func @unknown_input() {
  // expected-error @+1 {{'slot_mapping' is not a forward ABI input}}
  %x = exec.input "slot_mapping" : !exec.buf<tokens, 1, i32>
  return
}

// -----

// ABI arrays have their fixed shapes.
func.func @input_shape() {
  // expected-error @+1 {{ABI input 'qo_indptr' must be !exec.buf<seqs_plus_one, 1, i32>}}
  %x = exec.input "qo_indptr" : !exec.buf<seqs, 1, i32>
  return
}

// -----

// Workspace buffers have token or sequence rows.
func.func @alloc_pages() {
  // expected-error @+1 {{workspace buffers have tokens or seqs rows, got pages}}
  %x = exec.alloc : !exec.buf<pages, 4, i32>
  return
}

// -----

// Launches name an exec.kernel.
func.func @unknown_kernel(%x: !exec.buf<tokens, 4, bf16>) {
  // expected-error @+1 {{kernel 'missing' is not an exec.kernel}}
  exec.launch @missing(%x) : !exec.buf<tokens, 4, bf16>
  return
}

// -----

exec.kernel @k {kernel_template = "rms_norm", params = array<i64: 4>, dtype = bf16, grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<constant = 1>], block = 32 : i64, shared_bytes = 0 : i64}
// Symbolic scalars are the token or sequence count.
func.func @bad_scalar(%x: !exec.buf<tokens, 4, bf16>) {
  // expected-error @+1 {{scalars must be numbers or "tokens"/"seqs"}}
  exec.launch @k(%x) scalars ["pages"] : !exec.buf<tokens, 4, bf16>
  return
}

// -----

// Kernels have a three-dimensional grid.
// expected-error @+1 {{grid needs 3 dimensions, got 1}}
exec.kernel @flat {kernel_template = "rms_norm", params = array<i64: 4>, dtype = bf16, grid = [#exec.sym<tokens = 1>], block = 32 : i64, shared_bytes = 0 : i64}

// -----

// Symbolic sizes divide by a positive number.
// expected-error @+1 {{symbolic expression divisor must be positive, got 0}}
exec.kernel @div {kernel_template = "rms_norm", params = array<i64: 4>, dtype = bf16, grid = [#exec.sym<tokens = 1, divisor = 0>, #exec.sym<constant = 1>, #exec.sym<constant = 1>], block = 32 : i64, shared_bytes = 0 : i64}

// -----

// Thread-block clusters hold at most 16 blocks (the non-portable maximum).
// expected-error @+1 {{max_cluster must be in [1, 16] blocks, got 32}}
exec.kernel @wide {kernel_template = "paged_attention", params = array<i64: 4, 2, 16, 16>, dtype = bf16, grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 2>, #exec.sym<constant = 1>], block = 128 : i64, shared_bytes = 0 : i64, max_cluster = 32 : i64}

// -----

// GEMM weights map the input columns to the output columns.
func.func @gemm_shape(%x: !exec.buf<tokens, 16, bf16>, %y: !exec.buf<tokens, 8, bf16>) {
  %w = exec.weight ["w"] {source_shapes = [array<i64: 4, 16>]} : memref<4x16xbf16>
  // expected-error @+1 {{does not map 16 input columns to 8 output columns}}
  exec.gemm %x, %w -> %y : !exec.buf<tokens, 16, bf16>, memref<4x16xbf16>, !exec.buf<tokens, 8, bf16>
  return
}

// -----

// Weight recipes concatenate along an existing axis.
func.func @weight_axis() {
  // expected-error @+1 {{concat axis 2 is out of range}}
  %w = exec.weight ["a", "b"] {axis = 2 : i64, source_shapes = [array<i64: 4, 8>, array<i64: 4, 8>]} : memref<4x16xbf16>
  return
}

// -----

// Weight sources add up to the weight along the concat axis.
func.func @weight_sources_cover() {
  // expected-error @+1 {{sources give 12 along axis 1, 'memref<4x16xbf16>' needs 16}}
  %w = exec.weight ["a", "b"] {axis = 1 : i64, source_shapes = [array<i64: 4, 8>, array<i64: 4, 4>]} : memref<4x16xbf16>
  return
}

// -----

// Each weight source has the weight's extent off the concat axis.
func.func @weight_source_shape() {
  // expected-error @+1 {{source shape does not fit 'memref<4x16xbf16>' along axis 0}}
  %w = exec.weight ["a", "b"] {source_shapes = [array<i64: 2, 16>, array<i64: 2, 8>]} : memref<4x16xbf16>
  return
}
