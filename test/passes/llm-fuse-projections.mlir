// RUN: llmc-opt %s -split-input-file -llm-fuse-projections | FileCheck %s

// q, k and v projections of one input, with biases, become one GEMM.
// CHECK-LABEL: func.func @qkv_with_bias
// CHECK-SAME: (%[[X:.*]]: tensor<?x16xbf16>)
// CHECK-DAG: %[[WQ:.*]] = llm.param "q.weight"
// CHECK-DAG: %[[WK:.*]] = llm.param "k.weight"
// CHECK-DAG: %[[WV:.*]] = llm.param "v.weight"
// CHECK-DAG: %[[BQ:.*]] = llm.param "q.bias"
// CHECK-DAG: %[[BK:.*]] = llm.param "k.bias"
// CHECK-DAG: %[[BV:.*]] = llm.param "v.bias"
// CHECK: %[[W:.*]] = llm.concat %[[WQ]], %[[WK]], %[[WV]] {axis = 0 : i64} : (tensor<16x16xbf16>, tensor<8x16xbf16>, tensor<8x16xbf16>) -> tensor<32x16xbf16>
// CHECK: %[[B:.*]] = llm.concat %[[BQ]], %[[BK]], %[[BV]] {axis = 0 : i64} : (tensor<16xbf16>, tensor<8xbf16>, tensor<8xbf16>) -> tensor<32xbf16>
// CHECK: %[[QKV:.*]] = llm.linear %[[X]], %[[W]] bias %[[B]] : (tensor<?x16xbf16>, tensor<32x16xbf16>, tensor<32xbf16>) -> tensor<?x32xbf16>
// CHECK: %[[PARTS:.*]]:3 = llm.split %[[QKV]] : (tensor<?x32xbf16>) -> (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>)
// CHECK: return %[[PARTS]]#0, %[[PARTS]]#1, %[[PARTS]]#2
func.func @qkv_with_bias(%x: tensor<?x16xbf16>) -> (tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>) {
  %wq = llm.param "q.weight" : tensor<16x16xbf16>
  %bq = llm.param "q.bias" : tensor<16xbf16>
  %wk = llm.param "k.weight" : tensor<8x16xbf16>
  %bk = llm.param "k.bias" : tensor<8xbf16>
  %wv = llm.param "v.weight" : tensor<8x16xbf16>
  %bv = llm.param "v.bias" : tensor<8xbf16>
  %q = llm.linear %x, %wq bias %bq : (tensor<?x16xbf16>, tensor<16x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
  %k = llm.linear %x, %wk bias %bk : (tensor<?x16xbf16>, tensor<8x16xbf16>, tensor<8xbf16>) -> tensor<?x8xbf16>
  %v = llm.linear %x, %wv bias %bv : (tensor<?x16xbf16>, tensor<8x16xbf16>, tensor<8xbf16>) -> tensor<?x8xbf16>
  return %q, %k, %v : tensor<?x16xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16>
}

// -----

// gate and up projections without bias become one GEMM, even when a weight
// is defined after the first projection (it is hoisted).
// CHECK-LABEL: func.func @gate_up_late_weight
// CHECK: %[[WU:.*]] = llm.param "up"
// CHECK: %[[W:.*]] = llm.concat %{{.*}}, %[[WU]] {axis = 0 : i64} : (tensor<32x16xbf16>, tensor<32x16xbf16>) -> tensor<64x16xbf16>
// CHECK: %[[GU:.*]] = llm.linear %{{.*}}, %[[W]] : (tensor<?x16xbf16>, tensor<64x16xbf16>) -> tensor<?x64xbf16>
// CHECK: llm.split %[[GU]] : (tensor<?x64xbf16>) -> (tensor<?x32xbf16>, tensor<?x32xbf16>)
// CHECK-NOT: llm.linear
func.func @gate_up_late_weight(%x: tensor<?x16xbf16>) -> (tensor<?x32xbf16>, tensor<?x32xbf16>) {
  %wg = llm.param "gate" : tensor<32x16xbf16>
  %g = llm.linear %x, %wg : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xbf16>
  %wu = llm.param "up" : tensor<32x16xbf16>
  %u = llm.linear %x, %wu : (tensor<?x16xbf16>, tensor<32x16xbf16>) -> tensor<?x32xbf16>
  return %g, %u : tensor<?x32xbf16>, tensor<?x32xbf16>
}

// -----

// Linears of different inputs stay apart.
// CHECK-LABEL: func.func @different_inputs
// CHECK-NOT: llm.concat
// CHECK-NOT: llm.split
// CHECK-COUNT-2: llm.linear
func.func @different_inputs(%x: tensor<?x16xbf16>, %y: tensor<?x16xbf16>) -> (tensor<?x8xbf16>, tensor<?x8xbf16>) {
  %w = llm.param "w" : tensor<8x16xbf16>
  %a = llm.linear %x, %w : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xbf16>
  %b = llm.linear %y, %w : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xbf16>
  return %a, %b : tensor<?x8xbf16>, tensor<?x8xbf16>
}

// -----

// A linear with a bias and one without are not fused.
// CHECK-LABEL: func.func @mixed_bias
// CHECK-NOT: llm.concat
// CHECK: llm.linear %{{.*}}, %{{.*}} bias
// CHECK: llm.linear
func.func @mixed_bias(%x: tensor<?x16xbf16>) -> (tensor<?x8xbf16>, tensor<?x8xbf16>) {
  %w = llm.param "w" : tensor<8x16xbf16>
  %b = llm.param "b" : tensor<8xbf16>
  %a = llm.linear %x, %w bias %b : (tensor<?x16xbf16>, tensor<8x16xbf16>, tensor<8xbf16>) -> tensor<?x8xbf16>
  %c = llm.linear %x, %w : (tensor<?x16xbf16>, tensor<8x16xbf16>) -> tensor<?x8xbf16>
  return %a, %c : tensor<?x8xbf16>, tensor<?x8xbf16>
}
