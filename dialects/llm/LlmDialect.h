//===- LlmDialect.h - the llm dialect ---------------------------*- C++ -*-===//
#pragma once

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <vector>

#include "dialects/llm/LlmDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/llm/LlmAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/llm/LlmOps.h.inc"
