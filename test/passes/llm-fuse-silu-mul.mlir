// RUN: llmc-opt %s -split-input-file -llm-fuse-silu-mul | FileCheck %s

// silu(gate) * up of the fused gate/up projection reads it without a split.
// CHECK-LABEL: func.func @gate_up
// CHECK-SAME: (%[[GU:.*]]: tensor<?x64xbf16>)
// CHECK: %[[ACT:.*]] = llm.gated_silu %[[GU]] : (tensor<?x64xbf16>) -> tensor<?x32xbf16>
// CHECK-NOT: llm.split
// CHECK-NOT: llm.silu_mul
// CHECK: return %[[ACT]]
func.func @gate_up(%gu: tensor<?x64xbf16>) -> tensor<?x32xbf16> {
  %g, %u = llm.split %gu : (tensor<?x64xbf16>) -> (tensor<?x32xbf16>, tensor<?x32xbf16>)
  %a = llm.silu_mul %g, %u : tensor<?x32xbf16>
  return %a : tensor<?x32xbf16>
}

// -----

// With gate and up swapped the packed layout does not match: no fusion.
// CHECK-LABEL: func.func @swapped
// CHECK: llm.split
// CHECK: llm.silu_mul
// CHECK-NOT: llm.gated_silu
func.func @swapped(%gu: tensor<?x64xbf16>) -> tensor<?x32xbf16> {
  %g, %u = llm.split %gu : (tensor<?x64xbf16>) -> (tensor<?x32xbf16>, tensor<?x32xbf16>)
  %a = llm.silu_mul %u, %g : tensor<?x32xbf16>
  return %a : tensor<?x32xbf16>
}
