// RUN: llmc-opt %s -split-input-file -llm-fuse-add-rms-norm | FileCheck %s

// A residual add feeding an RMS norm becomes one op; the sum keeps its other users.
// CHECK-LABEL: func.func @add_then_norm
// CHECK-SAME: (%[[A:.*]]: tensor<?x16xbf16>, %[[B:.*]]: tensor<?x16xbf16>)
// CHECK: %[[W:.*]] = llm.param "norm"
// CHECK: %[[SUM:.*]], %[[NORMED:.*]] = llm.add_rms_norm %[[A]], %[[B]], %[[W]] {eps = 1.000000e-05 : f64}
// CHECK-NOT: llm.add %
// CHECK-NOT: llm.rms_norm
// CHECK: return %[[SUM]], %[[NORMED]]
func.func @add_then_norm(%a: tensor<?x16xbf16>, %b: tensor<?x16xbf16>) -> (tensor<?x16xbf16>, tensor<?x16xbf16>) {
  %w = llm.param "norm" : tensor<16xbf16>
  %s = llm.add %a, %b : tensor<?x16xbf16>
  %n = llm.rms_norm %s, %w {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
  return %s, %n : tensor<?x16xbf16>, tensor<?x16xbf16>
}

// -----

// An RMS norm of anything else stays as it is.
// CHECK-LABEL: func.func @plain_norm
// CHECK: llm.rms_norm
// CHECK-NOT: llm.add_rms_norm
func.func @plain_norm(%a: tensor<?x16xbf16>) -> tensor<?x16xbf16> {
  %w = llm.param "norm" : tensor<16xbf16>
  %n = llm.rms_norm %a, %w {eps = 1.0e-05 : f64} : (tensor<?x16xbf16>, tensor<16xbf16>) -> tensor<?x16xbf16>
  return %n : tensor<?x16xbf16>
}
