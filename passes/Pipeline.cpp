//===- Pipeline.cpp - the llm -> exec pipeline and registration ------------===//

#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace llmc {
namespace {
#define GEN_PASS_REGISTRATION
#include "passes/llm/Passes.h.inc"
#define GEN_PASS_REGISTRATION
#include "passes/exec/Passes.h.inc"
} // namespace

void buildFusionPipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options) {
  if (!options.fuse)
    return;
  mlir::OpPassManager &forward = pm.nest<mlir::func::FuncOp>();
  forward.addPass(createFuseProjections());
  forward.addPass(createFuseAddRmsNorm());
  forward.addPass(createFuseRopeKvWrite());
  forward.addPass(createFuseSiluMul());
  forward.addPass(mlir::createCanonicalizerPass());
}

void buildLoweringPipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &) {
  pm.addPass(createLowerToExec());
  pm.nest<mlir::func::FuncOp>().addPass(createPlanMemory());
}

void buildCompilePipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options) {
  buildFusionPipeline(pm, options);
  buildLoweringPipeline(pm, options);
}

void registerAll(mlir::DialectRegistry &registry) {
  registry.insert<llm::LlmDialect, exec::ExecDialect, mlir::func::FuncDialect,
                  mlir::memref::MemRefDialect>();
  static bool passesRegistered = [] {
    registerLlmPasses();
    registerExecPasses();
    mlir::registerCanonicalizerPass();
    mlir::PassPipelineRegistration<>(
        "llm-compile", "Fuse, lower to exec and plan memory (what llmc compile runs)",
        [](mlir::OpPassManager &pm) { buildCompilePipeline(pm, CompilePipelineOptions{}); });
    return true;
  }();
  (void)passesRegistered;
}

} // namespace llmc
