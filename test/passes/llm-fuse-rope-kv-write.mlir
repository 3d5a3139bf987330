// RUN: llmc-opt %s -split-input-file -llm-fuse-rope-kv-write | FileCheck %s

// Rope of q and k from one fused projection plus attention becomes
// rope_kv_write (append to the cache) and a read-only paged attention.
// CHECK-LABEL: func.func @fused_qkv
// CHECK-SAME: (%[[QKV:.*]]: tensor<?x32xbf16>, %[[POS:.*]]: tensor<?xi32>)
// CHECK: %[[Q:.*]] = llm.rope_kv_write %[[QKV]], %[[POS]]
// CHECK-SAME: head_dim = 8 : i64, layer = 3 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64
// CHECK-SAME: rope = #llm.rope<theta = 1.000000e+04, rotary_dim = 8, scaling = "none">
// CHECK: %[[O:.*]] = llm.paged_attention %[[Q]]
// CHECK-SAME: layer = 3 : i64
// CHECK-SAME: sliding_window = 64 : i64
// CHECK-NOT: llm.rope %
// CHECK-NOT: llm.split
// CHECK-NOT: llm.attention
// CHECK: return %[[O]]
func.func @fused_qkv(%qkv: tensor<?x32xbf16>, %pos: tensor<?xi32>) -> tensor<?x16xbf16> {
  %q, %k, %v = llm.split %qkv : (tensor<?x32xbf16>) -> (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>)
  %qr = llm.rope %q, %pos {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  %kr = llm.rope %k, %pos {num_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x8xbf16>, tensor<?xi32>) -> tensor<?x8xbf16>
  %o = llm.attention %qr, %kr, %v {layer = 3 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35 : f64, sliding_window = 64 : i64} : (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>) -> tensor<?x16xbf16>
  return %o : tensor<?x16xbf16>
}

// -----

// q, k and v from separate projections are left alone.
// CHECK-LABEL: func.func @separate_projections
// CHECK-NOT: llm.rope_kv_write
// CHECK: llm.attention
func.func @separate_projections(%q: tensor<?x16xbf16>, %k: tensor<?x8xbf16>, %v: tensor<?x8xbf16>, %pos: tensor<?xi32>) -> tensor<?x16xbf16> {
  %qr = llm.rope %q, %pos {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  %kr = llm.rope %k, %pos {num_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x8xbf16>, tensor<?xi32>) -> tensor<?x8xbf16>
  %o = llm.attention %qr, %kr, %v {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35 : f64} : (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>) -> tensor<?x16xbf16>
  return %o : tensor<?x16xbf16>
}

// -----

// q and k rotated differently cannot share one fused kernel.
// CHECK-LABEL: func.func @different_ropes
// CHECK-NOT: llm.rope_kv_write
// CHECK: llm.attention
func.func @different_ropes(%qkv: tensor<?x32xbf16>, %pos: tensor<?xi32>) -> tensor<?x16xbf16> {
  %q, %k, %v = llm.split %qkv : (tensor<?x32xbf16>) -> (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>)
  %qr = llm.rope %q, %pos {num_heads = 2 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 10000.0, rotary_dim = 8>} : (tensor<?x16xbf16>, tensor<?xi32>) -> tensor<?x16xbf16>
  %kr = llm.rope %k, %pos {num_heads = 1 : i64, head_dim = 8 : i64, rope = #llm.rope<theta = 500000.0, rotary_dim = 8>} : (tensor<?x8xbf16>, tensor<?xi32>) -> tensor<?x8xbf16>
  %o = llm.attention %qr, %kr, %v {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35 : f64} : (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>) -> tensor<?x16xbf16>
  return %o : tensor<?x16xbf16>
}
