// RUN: llmc-opt %s | llmc-opt | FileCheck %s
// Every llm op survives a print/parse round trip.

// CHECK-LABEL: func.func @all_ops
// CHECK-SAME: (%[[IDS:.*]]: tensor<?xi32>, %[[POS:.*]]: tensor<?xi32>)
func.func @all_ops(%ids: tensor<?xi32>, %pos: tensor<?xi32>) -> tensor<?x32xf32> {
  // CHECK: %[[TABLE:.*]] = llm.param "embed" : tensor<32x16xbf16>
  %table = llm.param "embed" : tensor<32x16xbf16>
  %norm = llm.param "norm" : tensor<16xbf16>
  %wq = llm.param "q" : tensor<16x16xbf16>
  %wk = llm.param "k" : tensor<8x16xbf16>
  %bq = llm.param "bq" : tensor<16xbf16>
  // CHECK: %[[WQK:.*]] = llm.concat %{{.*}}, %{{.*}} {axis = 0 : i64} : (tensor<16x16xbf16>, tensor<8x16xbf16>) -> tensor<24x16xbf16>
  %wqk = llm.concat %wq, %wk {axis = 0 : i64} : (tensor<16x16xbf16>, tensor<8x16xbf16>) -> tensor<24x16xbf16>
  // CHECK: %[[X:.*]] = llm.embedding %[[TABLE]], %[[IDS]]
  %x = llm.embedding %table, %ids : (tensor<32x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  // CHECK: llm.rms_norm %[[X]], %{{.*}} {eps = 1.000000e-05 : f64}
  %n = llm.rms_norm %x, %norm {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
  // CHECK: llm.linear %{{.*}}, %{{.*}} bias %{{.*}} :
  %q = llm.linear %n, %wq bias %bq : (tensor<?x16xbf16>, tensor<16x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
  %k = llm.linear %n, %wk : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xbf16>
  %v = llm.linear %n, %wk : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xbf16>
  %qk = llm.linear %n, %wqk : (tensor<?x16xbf16>, tensor<24x16xbf16>) -> tensor<?x24xbf16>
  // CHECK: llm.split %{{.*}} : (tensor<?x24xbf16>) -> (tensor<?x16xbf16>, tensor<?x8xbf16>)
  %q2, %k2 = llm.split %qk : (tensor<?x24xbf16>) -> (tensor<?x16xbf16>, tensor<?x8xbf16>)
  // CHECK: llm.rope %{{.*}}, %[[POS]] {head_dim = 8 : i64, num_heads = 2 : i64, rope = #llm.rope<theta = 5.000000e+05, rotary_dim = 8, scaling = "llama3", factor = 8.000000e+00, low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00, original_max_positions = 8192>}
  %qr = llm.rope %q, %pos {head_dim = 8 : i64, num_heads = 2 : i64, rope = #llm.rope<theta = 500000.0, rotary_dim = 8, scaling = "llama3", factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_positions = 8192>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  %kr = llm.rope %k, %pos {head_dim = 8 : i64, num_heads = 1 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 4>} : (tensor<?x8xbf16>, tensor<?xi32>) -> tensor<?x8xbf16>
  // CHECK: llm.attention {{.*}} {head_dim = 8 : i64, layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339{{[0-9]*}} : f64, sliding_window = 4 : i64}
  %a = llm.attention %qr, %kr, %v {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64, sliding_window = 4 : i64} : (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>) -> tensor<?x16xbf16>
  // CHECK: llm.add
  %s = llm.add %x, %a : tensor<?x16xbf16>
  // CHECK: llm.add_rms_norm
  %s2, %n2 = llm.add_rms_norm %s, %x, %norm {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<?x16xbf16>, tensor<16xbf16>) -> (tensor<?x16xbf16>, tensor<?x16xbf16>)
  %wqkv = llm.param "qkv" : tensor<32x16xbf16>
  %qkv = llm.linear %n, %wqkv : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xbf16>
  // CHECK: llm.rope_kv_write {{.*}} {head_dim = 8 : i64, layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64
  %q3 = llm.rope_kv_write %qkv, %pos {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x32xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  // CHECK: llm.paged_attention
  %a3 = llm.paged_attention %q3 {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35355339 : f64} : (tensor<?x16xbf16>) -> tensor<?x16xbf16>
  // CHECK: llm.silu_mul
  %m = llm.silu_mul %a3, %n2 : tensor<?x16xbf16>
  // CHECK: llm.gated_silu %{{.*}} : (tensor<?x16xbf16>) -> tensor<?x8xbf16>
  %g = llm.gated_silu %m : (tensor<?x16xbf16>) -> tensor<?x8xbf16>
  // CHECK: llm.logits %{{.*}}, %[[TABLE]] : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xf32>
  %l = llm.logits %s2, %table : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xf32>
  return %l : tensor<?x32xf32>
}
