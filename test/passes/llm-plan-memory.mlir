// RUN: llmc-opt %s -split-input-file -llm-plan-memory | FileCheck %s

exec.kernel @k {kernel_template = "rms_norm", params = array<i64: 16>, dtype = bf16, grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<constant = 1>], block = 32 : i64, shared_bytes = 0 : i64}

// A chain a -> b -> c: c reuses a's bytes once a is dead; b cannot.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: exec.workspace_bytes_per_seq = 0 : i64, exec.workspace_bytes_per_token = 64 : i64
// CHECK: %[[A:.*]] = exec.alloc {offset = 0 : i64} : <tokens, 16, bf16>
// CHECK: %[[B:.*]] = exec.alloc {offset = 32 : i64} : <tokens, 16, bf16>
// CHECK: exec.launch @k(%[[A]], %[[B]])
// CHECK: %[[C:.*]] = exec.alloc {offset = 0 : i64} : <tokens, 16, bf16>
// CHECK: exec.launch @k(%[[B]], %[[C]])
func.func @chain() {
  %a = exec.alloc : !exec.buf<tokens, 16, bf16>
  %b = exec.alloc : !exec.buf<tokens, 16, bf16>
  exec.launch @k(%a, %b) : !exec.buf<tokens, 16, bf16>, !exec.buf<tokens, 16, bf16>
  %c = exec.alloc : !exec.buf<tokens, 16, bf16>
  exec.launch @k(%b, %c) : !exec.buf<tokens, 16, bf16>, !exec.buf<tokens, 16, bf16>
  return
}

// -----

exec.kernel @k {kernel_template = "rms_norm", params = array<i64: 16>, dtype = bf16, grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<constant = 1>], block = 32 : i64, shared_bytes = 0 : i64}

// A buffer used again later stays live: nothing is placed over it, and a
// freed gap too small for the next buffer is skipped (first fit).
// CHECK-LABEL: func.func @long_lived
// CHECK-SAME: exec.workspace_bytes_per_token = 128 : i64
// CHECK: %[[R:.*]] = exec.alloc {offset = 0 : i64} : <tokens, 16, bf16>
// CHECK: %[[T:.*]] = exec.alloc {offset = 32 : i64} : <tokens, 8, bf16>
// CHECK: %[[U:.*]] = exec.alloc {offset = 48 : i64} : <tokens, 16, bf16>
// CHECK: %[[W:.*]] = exec.alloc {offset = 80 : i64} : <tokens, 24, bf16>
// CHECK: exec.launch @k(%[[R]], %[[U]], %[[W]])
func.func @long_lived() {
  %r = exec.alloc : !exec.buf<tokens, 16, bf16>
  %t = exec.alloc : !exec.buf<tokens, 8, bf16>
  exec.launch @k(%r, %t) : !exec.buf<tokens, 16, bf16>, !exec.buf<tokens, 8, bf16>
  %u = exec.alloc : !exec.buf<tokens, 16, bf16>
  exec.launch @k(%t, %u) : !exec.buf<tokens, 8, bf16>, !exec.buf<tokens, 16, bf16>
  %w = exec.alloc : !exec.buf<tokens, 24, bf16>
  exec.launch @k(%r, %u, %w) : !exec.buf<tokens, 16, bf16>, !exec.buf<tokens, 16, bf16>, !exec.buf<tokens, 24, bf16>
  return
}

// -----

exec.kernel @k {kernel_template = "gather_rows", params = array<i64: 16>, dtype = bf16, grid = [#exec.sym<seqs = 1>, #exec.sym<constant = 1>, #exec.sym<constant = 1>], block = 32 : i64, shared_bytes = 0 : i64}

// Token rows and sequence rows live in separate regions; row sizes are
// rounded up to 16 bytes.
// CHECK-LABEL: func.func @regions
// CHECK-SAME: exec.workspace_bytes_per_seq = 80 : i64, exec.workspace_bytes_per_token = 16 : i64
// CHECK: exec.alloc {offset = 0 : i64} : <tokens, 3, bf16>
// CHECK: exec.alloc {offset = 0 : i64} : <seqs, 16, bf16>
// CHECK: exec.alloc {offset = 32 : i64} : <seqs, 12, f32>
func.func @regions() {
  %x = exec.alloc : !exec.buf<tokens, 3, bf16>
  %h = exec.alloc : !exec.buf<seqs, 16, bf16>
  exec.launch @k(%x, %h) : !exec.buf<tokens, 3, bf16>, !exec.buf<seqs, 16, bf16>
  %l = exec.alloc : !exec.buf<seqs, 12, f32>
  exec.launch @k(%h, %l) : !exec.buf<seqs, 16, bf16>, !exec.buf<seqs, 12, f32>
  return
}
