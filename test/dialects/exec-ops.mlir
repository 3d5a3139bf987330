// RUN: llmc-opt %s | llmc-opt | FileCheck %s
// Every exec op and type survives a print/parse round trip.

// CHECK: exec.kernel @rms_norm_16_bf16 {block = 32 : i64, dtype = bf16, grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<tokens = 3, seqs = 2, constant = 1, divisor = 4>]
exec.kernel @rms_norm_16_bf16 {kernel_template = "rms_norm", params = array<i64: 16>, dtype = bf16, grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<tokens = 3, seqs = 2, constant = 1, divisor = 4>], block = 32 : i64, shared_bytes = 0 : i64}

// CHECK-LABEL: func.func @program
// CHECK-SAME: attributes {exec.workspace_bytes_per_seq = 0 : i64, exec.workspace_bytes_per_token = 64 : i64}
func.func @program() attributes {exec.workspace_bytes_per_seq = 0 : i64, exec.workspace_bytes_per_token = 64 : i64} {
  // CHECK: %[[IDS:.*]] = exec.input "token_ids" : <tokens, 1, i32>
  %ids = exec.input "token_ids" : !exec.buf<tokens, 1, i32>
  // CHECK: %[[W:.*]] = exec.weight ["a.weight", "b.weight"] {source_shapes = [array<i64: 16, 16>, array<i64: 16, 16>]} : memref<32x16xbf16>
  %w = exec.weight ["a.weight", "b.weight"] {axis = 0 : i64, source_shapes = [array<i64: 16, 16>, array<i64: 16, 16>]} : memref<32x16xbf16>
  %n = exec.weight ["norm"] {source_shapes = [array<i64: 16>]} : memref<16xbf16>
  // CHECK: exec.constant dense<[1.000000e+00, 5.000000e-01]> : tensor<2xf32> : memref<2xf32>
  %c = exec.constant dense<[1.0, 0.5]> : tensor<2xf32> : memref<2xf32>
  // CHECK: %[[K:.*]], %[[V:.*]] = exec.kv_cache 3
  %k, %v = exec.kv_cache 3
  // CHECK: %[[X:.*]] = exec.alloc {offset = 0 : i64} : <tokens, 16, bf16>
  %x = exec.alloc {offset = 0 : i64} : !exec.buf<tokens, 16, bf16>
  %y = exec.alloc {offset = 32 : i64} : !exec.buf<tokens, 32, bf16>
  // CHECK: exec.launch @rms_norm_16_bf16(%[[X]], %{{.*}}, %[[X]]) scalars [9.99999974E-6 : f32, "tokens"]
  exec.launch @rms_norm_16_bf16(%x, %n, %x) scalars [1.0e-05 : f32, "tokens"] : !exec.buf<tokens, 16, bf16>, memref<16xbf16>, !exec.buf<tokens, 16, bf16>
  // CHECK: exec.gemm %[[X]], %[[W]] -> %{{.*}} :
  exec.gemm %x, %w -> %y : !exec.buf<tokens, 16, bf16>, memref<32x16xbf16>, !exec.buf<tokens, 32, bf16>
  // CHECK: exec.output "logits", %{{.*}} : <tokens, 32, bf16>
  exec.output "logits", %y : !exec.buf<tokens, 32, bf16>
  return
}
