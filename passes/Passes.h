//===- Passes.h - llmc passes, pipeline and registration -------*- C++ -*-===//
#pragma once

#include "dialects/exec/ExecDialect.h"
#include "dialects/llm/LlmDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace llmc {

#define GEN_PASS_DECL
#include "passes/llm/Passes.h.inc"
#define GEN_PASS_DECL
#include "passes/exec/Passes.h.inc"

/// Options of the llm -> exec pipeline. Quantisation and TP/PP sharding will
/// add their options here and their passes to buildCompilePipeline.
struct CompilePipelineOptions {
  bool fuse = true;
};

/// llm as built from a config -> fused llm.
void buildFusionPipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options);
/// fused llm -> exec with a memory plan.
void buildLoweringPipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options);
/// Both of the above: what `llmc compile` runs.
void buildCompilePipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options);

/// Registers the llm and exec dialects (plus the upstream ones they use), all
/// llmc passes, and the `llm-compile` pipeline. Used by llmc, llmc-opt and tests.
void registerAll(mlir::DialectRegistry &registry);

} // namespace llmc
