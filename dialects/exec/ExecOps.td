//===- ExecOps.td - the exec dialect: what the runtime executes -----------===//
//
// The exec dialect is the program the runtime runs: explicit buffers (ABI
// inputs, weights with their load-time recipes, the KV cache, workspace
// allocations), specialised kernel launches, GEMMs and collectives. Buffer
// rows are symbolic (the batch's token count T or sequence count S); launch
// geometry is a function of T and S.
//
//===----------------------------------------------------------------------===//

#ifndef LLMC_DIALECTS_EXEC_EXECOPS_TD
#define LLMC_DIALECTS_EXEC_EXECOPS_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Exec_Dialect : Dialect {
  let name = "exec";
  let summary = "Kernel program over explicit buffers";
  let cppNamespace = "::llmc::exec";
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::memref::MemRefDialect"];
}

//===----------------------------------------------------------------------===//
// Types and attributes
//===----------------------------------------------------------------------===//

def Exec_BufferType : TypeDef<Exec_Dialect, "Buffer"> {
  let mnemonic = "buf";
  let summary = "A row-major buffer with a symbolic number of rows";
  let description = [{
    `rows` is one of `tokens` (T), `seqs` (S), `seqs_plus_one` (S + 1) or
    `pages` (the page-table length); each row holds `cols` elements.

    ```mlir
    !exec.buf<tokens, 4096, bf16>
    ```
  }];
  let parameters = (ins StringRefParameter<"symbolic row count">:$rows,
                        "int64_t":$cols, "::mlir::Type":$elementType);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Bytes of one row, rounded up to 16 so that buffers packed at
    /// multiples of (row bytes x a row count divisible by 16) stay aligned.
    int64_t alignedRowBytes() const;
  }];
}

def Exec_KvPagesType : TypeDef<Exec_Dialect, "KvPages"> {
  let mnemonic = "kv";
  let summary = "The K or V pages of one layer of the paged KV cache";
}

def Exec_SymExprAttr : AttrDef<Exec_Dialect, "SymExpr"> {
  let mnemonic = "sym";
  let summary = "ceil((tokens * T + seqs * S + constant) / divisor)";
  let parameters = (ins DefaultValuedParameter<"int64_t", "0">:$tokens,
                        DefaultValuedParameter<"int64_t", "0">:$seqs,
                        DefaultValuedParameter<"int64_t", "0">:$constant,
                        DefaultValuedParameter<"int64_t", "1">:$divisor);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

class Exec_Op<string mnemonic, list<Trait> traits = []>
    : Op<Exec_Dialect, mnemonic, traits>;

def Exec_AnyBuffer : AnyTypeOf<[Exec_BufferType, AnyStaticShapeMemRef, Exec_KvPagesType]>;

def Exec_KernelOp : Exec_Op<"kernel", [Symbol]> {
  let summary = "A specialisation of a kernels/ template";
  let description = [{
    `kernel_template` names the kernels/<template>.cuh file, `params` its integer
    template arguments in order and `dtype` its element type. The launch
    geometry comes from the template's geometry section; `max_cluster` > 1
    (default 1) lets the runtime launch thread-block clusters of up to that
    many blocks along x.

    ```mlir
    exec.kernel @add_rms_norm_4096_bf16 {kernel_template = "add_rms_norm",
        params = array<i64: 4096>, dtype = bf16,
        grid = [#exec.sym<tokens = 1>, #exec.sym<constant = 1>, #exec.sym<constant = 1>],
        block = 256 : i64, shared_bytes = 0 : i64}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrAttr:$kernel_template,
                       DenseI64ArrayAttr:$params, TypeAttr:$dtype,
                       TypedArrayAttrBase<Exec_SymExprAttr, "grid">:$grid,
                       I64Attr:$block, I64Attr:$shared_bytes,
                       DefaultValuedAttr<I64Attr, "1">:$max_cluster);
  let assemblyFormat = "$sym_name attr-dict";
  let hasVerifier = 1;
}

def Exec_InputOp : Exec_Op<"input", [Pure]> {
  let summary = "A forward ABI array provided by the runtime";
  let description = [{
    One of token_ids, positions, qo_indptr, kv_indptr, kv_page_indices,
    kv_last_page_len, logits_rows.
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs Exec_BufferType:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Exec_WeightOp : Exec_Op<"weight", [Pure]> {
  let summary = "A weight and the recipe that builds it from checkpoint tensors";
  let description = [{
    The weight is the concatenation of `sources` (checkpoint tensor names,
    of shapes `source_shapes`) along `axis`, converted to the result's
    element type at load time.

    ```mlir
    %w = exec.weight ["q.weight", "k.weight"] {source_shapes = [array<i64: 4096, 4096>,
        array<i64: 1024, 4096>]} : memref<5120x4096xbf16>
    ```
  }];
  let arguments = (ins StrArrayAttr:$sources,
                       TypedArrayAttrBase<DenseI64ArrayAttr, "shapes">:$source_shapes,
                       DefaultValuedAttr<I64Attr, "0">:$axis);
  let results = (outs AnyStaticShapeMemRef:$result);
  let assemblyFormat = "$sources attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Exec_ConstantOp : Exec_Op<"constant", [Pure]> {
  let summary = "A small table computed by the compiler (e.g. rope frequencies)";
  let arguments = (ins ElementsAttr:$value);
  let results = (outs AnyStaticShapeMemRef:$result);
  let assemblyFormat = "$value attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Exec_KvCacheOp : Exec_Op<"kv_cache", [Pure]> {
  let summary = "The K and V pages of one layer";
  let arguments = (ins I64Attr:$layer);
  let results = (outs Exec_KvPagesType:$keys, Exec_KvPagesType:$values);
  let assemblyFormat = "$layer attr-dict";
}

def Exec_AllocOp : Exec_Op<"alloc", [MemoryEffects<[MemAlloc]>]> {
  let summary = "A workspace buffer";
  let description = [{
    Memory planning (`llm-plan-memory`) sets `offset`: the buffer starts at
    `offset x max_rows` bytes into the tokens (or seqs) region of the
    workspace, where max_rows is the runtime's max tokens (or seqs) per
    forward.
  }];
  let arguments = (ins OptionalAttr<I64Attr>:$offset);
  let results = (outs Exec_BufferType:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Exec_LaunchOp : Exec_Op<"launch", [DeclareOpInterfaceMethods<SymbolUserOpInterface>,
                                       MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "Launch a specialised kernel";
  let description = [{
    Kernel arguments are the buffer operands in order, then `scalars`:
    float or integer immediates, or the strings "tokens" / "seqs" for the
    batch's T and S.

    ```mlir
    exec.launch @rms_norm_4096_bf16(%x, %w, %y) scalars [1.0e-05 : f32, "tokens"]
        : !exec.buf<tokens, 4096, bf16>, memref<4096xbf16>, !exec.buf<tokens, 4096, bf16>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$kernel, Variadic<Exec_AnyBuffer>:$args,
                       DefaultValuedAttr<ArrayAttr, "{}">:$scalars);
  let assemblyFormat = [{
    $kernel `(` $args `)` (`scalars` $scalars^)? attr-dict `:` type($args)
  }];
  let hasVerifier = 1;
}

def Exec_GemmOp : Exec_Op<"gemm", [
                                   MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "out = input * weight^T (+ bias)";
  let description = [{
    `input` is [rows, K], `weight` [N, K] (checkpoint layout), `out`
    [rows, N]; `out` may be fp32 while the operands are 16-bit.
  }];
  let arguments = (ins Exec_BufferType:$input, AnyStaticShapeMemRef:$weight,
                       Optional<AnyStaticShapeMemRef>:$bias, Exec_BufferType:$out);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? `->` $out attr-dict `:` type(operands)
  }];
  let hasVerifier = 1;
}

def Exec_OutputOp : Exec_Op<"output", [MemoryEffects<[MemRead]>]> {
  let summary = "Names a buffer as a forward output (e.g. logits)";
  let arguments = (ins StrAttr:$name, Exec_BufferType:$buffer);
  let assemblyFormat = "$name `,` $buffer attr-dict `:` type($buffer)";
}

#endif // LLMC_DIALECTS_EXEC_EXECOPS_TD
