//===- Passes.td - passes on the llm dialect -------------------------------===//

#ifndef LLMC_PASSES_LLM_PASSES_TD
#define LLMC_PASSES_LLM_PASSES_TD

include "mlir/Pass/PassBase.td"

def FuseProjections : Pass<"llm-fuse-projections", "mlir::func::FuncOp"> {
  let summary = "Fuse linear layers that share an input into one GEMM";
  let description = [{
    Linear layers reading the same activation (q/k/v projections, gate/up
    projections) become one linear over the concatenated weights (concat is
    done once, at weight load time), followed by a split of its columns.

    Before:
    ```mlir
    %q = llm.linear %x, %wq : (tensor<?x64xbf16>, tensor<64x64xbf16>) -> tensor<?x64xbf16>
    %k = llm.linear %x, %wk : (tensor<?x64xbf16>, tensor<16x64xbf16>) -> tensor<?x16xbf16>
    ```
    After:
    ```mlir
    %w = llm.concat %wq, %wk {axis = 0 : i64} : (...) -> tensor<80x64xbf16>
    %qk = llm.linear %x, %w : (tensor<?x64xbf16>, tensor<80x64xbf16>) -> tensor<?x80xbf16>
    %q, %k = llm.split %qk : (tensor<?x80xbf16>) -> (tensor<?x64xbf16>, tensor<?x16xbf16>)
    ```
  }];
  let dependentDialects = ["::llmc::llm::LlmDialect"];
}

def FuseAddRmsNorm : Pass<"llm-fuse-add-rms-norm", "mlir::func::FuncOp"> {
  let summary = "Fuse a residual add with the RMS norm that reads it";
  let description = [{
    Before:
    ```mlir
    %s = llm.add %a, %b : tensor<?x64xbf16>
    %n = llm.rms_norm %s, %w {eps = 1.0e-05 : f64} : (...) -> tensor<?x64xbf16>
    ```
    After:
    ```mlir
    %s, %n = llm.add_rms_norm %a, %b, %w {eps = 1.0e-05 : f64} : (...) -> (tensor<?x64xbf16>, tensor<?x64xbf16>)
    ```
  }];
  let dependentDialects = ["::llmc::llm::LlmDialect"];
}

def FuseRopeKvWrite : Pass<"llm-fuse-rope-kv-write", "mlir::func::FuncOp"> {
  let summary = "Fuse q/k rotary embedding with the KV-cache append";
  let description = [{
    Attention whose query and key are rotated slices of one fused q|k|v
    projection becomes `llm.rope_kv_write` (rotate q and k, append k and v to
    the paged cache, return q) and `llm.paged_attention` (read-only).

    Before:
    ```mlir
    %q, %k, %v = llm.split %qkv : ...
    %qr = llm.rope %q, %pos {...}
    %kr = llm.rope %k, %pos {...}
    %o = llm.attention %qr, %kr, %v {layer = 0 : i64, ...}
    ```
    After:
    ```mlir
    %qr = llm.rope_kv_write %qkv, %pos {layer = 0 : i64, ...}
    %o = llm.paged_attention %qr {layer = 0 : i64, ...}
    ```
  }];
  let dependentDialects = ["::llmc::llm::LlmDialect"];
}

def FuseSiluMul : Pass<"llm-fuse-silu-mul", "mlir::func::FuncOp"> {
  let summary = "Fuse silu(gate) * up with the split of the fused gate/up GEMM";
  let description = [{
    Before:
    ```mlir
    %g, %u = llm.split %gu : (tensor<?x256xbf16>) -> (tensor<?x128xbf16>, tensor<?x128xbf16>)
    %a = llm.silu_mul %g, %u : tensor<?x128xbf16>
    ```
    After:
    ```mlir
    %a = llm.gated_silu %gu : (tensor<?x256xbf16>) -> tensor<?x128xbf16>
    ```
  }];
  let dependentDialects = ["::llmc::llm::LlmDialect"];
}

def LowerToExec : Pass<"llm-lower-to-exec", "mlir::ModuleOp"> {
  let summary = "Lower the llm forward function to an exec kernel program";
  let description = [{
    Every llm op becomes explicit buffers and kernel launches (specialised
    kernels/ templates, declared once as `exec.kernel` symbols) or GEMMs.
    Weights become `exec.weight` recipes, rope frequencies `exec.constant`
    tables. Ops that only exist to be fused (`llm.rope`, `llm.attention`,
    `llm.split`, `llm.add`, `llm.silu_mul`) are errors here.

    Before:
    ```mlir
    %n = llm.rms_norm %x, %w {eps = 1.0e-05 : f64} : (...) -> tensor<?x64xbf16>
    ```
    After:
    ```mlir
    %n = exec.alloc : !exec.buf<tokens, 64, bf16>
    exec.launch @rms_norm_64_bf16(%x, %w, %n) scalars [1.0e-05 : f32, "tokens"] : ...
    ```
  }];
  let dependentDialects = ["::llmc::exec::ExecDialect", "::mlir::memref::MemRefDialect"];
}

#endif // LLMC_PASSES_LLM_PASSES_TD
