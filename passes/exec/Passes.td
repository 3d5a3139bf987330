//===- Passes.td - passes on the exec dialect ------------------------------===//

#ifndef LLMC_PASSES_EXEC_PASSES_TD
#define LLMC_PASSES_EXEC_PASSES_TD

include "mlir/Pass/PassBase.td"

def PlanMemory : Pass<"llm-plan-memory", "mlir::func::FuncOp"> {
  let summary = "Pack workspace buffers into one workspace by liveness";
  let description = [{
    Every `exec.alloc` gets an `offset` in row-byte units: a buffer of R
    rows starts at `offset x R_max` bytes of its region, where R_max is the
    runtime's max tokens (or seqs) per forward. Buffers whose lifetimes do
    not overlap share bytes (first fit). The function gets
    `exec.workspace_bytes_per_token` and `exec.workspace_bytes_per_seq`:
    the workspace is `per_token x T_max + per_seq x S_max` bytes.

    Before:
    ```mlir
    %a = exec.alloc : !exec.buf<tokens, 64, bf16>
    %b = exec.alloc : !exec.buf<tokens, 64, bf16>   // %a dead here
    ```
    After:
    ```mlir
    %a = exec.alloc {offset = 0 : i64} : !exec.buf<tokens, 64, bf16>
    %b = exec.alloc {offset = 0 : i64} : !exec.buf<tokens, 64, bf16>
    ```
  }];
  let dependentDialects = ["::llmc::exec::ExecDialect"];
}

#endif // LLMC_PASSES_EXEC_PASSES_TD
