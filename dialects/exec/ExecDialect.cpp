//===- ExecDialect.cpp - exec dialect: registration, types, verifiers ------===//

#include "dialects/exec/ExecDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace llmc::exec;

#include "dialects/exec/ExecDialect.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/exec/ExecTypes.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/exec/ExecAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/exec/ExecOps.cpp.inc"

void ExecDialect::initialize() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/exec/ExecTypes.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/exec/ExecAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialects/exec/ExecOps.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Types and attributes
//===----------------------------------------------------------------------===//

static bool isRowSymbol(StringRef rows) {
  return rows == "tokens" || rows == "seqs" || rows == "seqs_plus_one" || rows == "pages";
}

// !exec.buf<tokens, 4096, bf16>
Type BufferType::parse(AsmParser &parser) {
  StringRef rows;
  int64_t cols = 0;
  Type elementType;
  if (parser.parseLess() || parser.parseKeyword(&rows) || parser.parseComma() ||
      parser.parseInteger(cols) || parser.parseComma() || parser.parseType(elementType) ||
      parser.parseGreater())
    return {};
  return parser.getChecked<BufferType>(parser.getContext(), rows, cols, elementType);
}

void BufferType::print(AsmPrinter &printer) const {
  printer << "<" << getRows() << ", " << getCols() << ", " << getElementType() << ">";
}

LogicalResult BufferType::verify(function_ref<InFlightDiagnostic()> emitError, StringRef rows,
                                 int64_t cols, Type elementType) {
  if (!isRowSymbol(rows))
    return emitError() << "buffer rows must be tokens, seqs, seqs_plus_one or pages, got '"
                       << rows << "'";
  if (cols <= 0)
    return emitError() << "buffer cols must be positive, got " << cols;
  if (!elementType.isIntOrFloat())
    return emitError() << "buffer element type must be an integer or float, got " << elementType;
  return success();
}

int64_t BufferType::alignedRowBytes() const {
  int64_t bytes = getCols() * ((getElementType().getIntOrFloatBitWidth() + 7) / 8);
  return (bytes + 15) / 16 * 16;
}

LogicalResult SymExprAttr::verify(function_ref<InFlightDiagnostic()> emitError, int64_t tokens,
                                  int64_t seqs, int64_t constant, int64_t divisor) {
  if (divisor <= 0)
    return emitError() << "symbolic expression divisor must be positive, got " << divisor;
  if (tokens < 0 || seqs < 0 || constant < 0)
    return emitError() << "symbolic expression coefficients must be non-negative";
  return success();
}

//===----------------------------------------------------------------------===//
// Op verifiers
//===----------------------------------------------------------------------===//

LogicalResult KernelOp::verify() {
  if (getGrid().size() != 3)
    return emitOpError() << "grid needs 3 dimensions, got " << getGrid().size();
  if (int64_t(getBlock()) <= 0 || getBlock() > 1024)
    return emitOpError() << "block must be in [1, 1024] threads, got " << getBlock();
  if (int64_t(getSharedBytes()) < 0)
    return emitOpError() << "shared_bytes must be non-negative";
  if (getMaxCluster() < 1 || getMaxCluster() > 16)
    return emitOpError() << "max_cluster must be in [1, 16] blocks, got " << getMaxCluster();
  if (!getDtype().isF32() && !getDtype().isF16() && !getDtype().isBF16())
    return emitOpError() << "dtype must be f32, f16 or bf16, got " << getDtype();
  return success();
}

LogicalResult InputOp::verify() {
  for (const llmc::plan::AbiInput &input : llmc::plan::kAbiInputs) {
    if (getName() != input.name)
      continue;
    auto type = getResult().getType();
    if (type.getRows() != input.rows || type.getCols() != 1 || !type.getElementType().isInteger(32))
      return emitOpError() << "ABI input '" << getName() << "' must be !exec.buf<" << input.rows
                           << ", 1, i32>";
    return success();
  }
  return emitOpError() << "'" << getName() << "' is not a forward ABI input";
}

LogicalResult WeightOp::verify() {
  if (getSources().empty())
    return emitOpError() << "needs at least one source tensor";
  for (Attribute source : getSources())
    if (cast<StringAttr>(source).getValue().empty())
      return emitOpError() << "source tensor names must be non-empty";
  auto type = getResult().getType();
  const int64_t axis = getAxis();
  if (axis < 0 || axis >= type.getRank())
    return emitOpError() << "concat axis " << axis << " is out of range for " << type;
  if (getSourceShapes().size() != getSources().size())
    return emitOpError() << "needs one shape per source, got " << getSourceShapes().size()
                         << " for " << getSources().size() << " sources";
  int64_t axisTotal = 0;
  for (Attribute attr : getSourceShapes()) {
    ArrayRef<int64_t> shape = cast<DenseI64ArrayAttr>(attr).asArrayRef();
    bool fits = int64_t(shape.size()) == type.getRank();
    for (int64_t d = 0; fits && d < type.getRank(); ++d)
      fits = d == axis || shape[d] == type.getDimSize(d);
    if (!fits)
      return emitOpError() << "source shape does not fit " << type << " along axis " << axis;
    axisTotal += shape[axis];
  }
  if (axisTotal != type.getDimSize(axis))
    return emitOpError() << "sources give " << axisTotal << " along axis " << axis << ", "
                         << type << " needs " << type.getDimSize(axis);
  return success();
}

LogicalResult ConstantOp::verify() {
  auto valueType = cast<ShapedType>(getValue().getType());
  auto type = getResult().getType();
  if (valueType.getShape() != type.getShape() ||
      valueType.getElementType() != type.getElementType())
    return emitOpError() << "value type " << valueType << " does not match result " << type;
  return success();
}

LogicalResult AllocOp::verify() {
  if (getOffset() && int64_t(*getOffset()) < 0)
    return emitOpError() << "offset must be non-negative";
  StringRef rows = getResult().getType().getRows();
  if (rows != "tokens" && rows != "seqs")
    return emitOpError() << "workspace buffers have tokens or seqs rows, got " << rows;
  return success();
}

LogicalResult LaunchOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  if (!symbolTable.lookupNearestSymbolFrom<KernelOp>(*this, getKernelAttr()))
    return emitOpError() << "kernel '" << getKernel() << "' is not an exec.kernel";
  return success();
}

LogicalResult LaunchOp::verify() {
  for (Attribute scalar : getScalars()) {
    if (isa<FloatAttr, IntegerAttr>(scalar))
      continue;
    auto symbol = dyn_cast<StringAttr>(scalar);
    if (!symbol || (symbol.getValue() != "tokens" && symbol.getValue() != "seqs"))
      return emitOpError() << "scalars must be numbers or \"tokens\"/\"seqs\", got " << scalar;
  }
  return success();
}

LogicalResult GemmOp::verify() {
  auto input = getInput().getType();
  auto out = getOut().getType();
  auto weight = getWeight().getType();
  if (weight.getRank() != 2)
    return emitOpError() << "weight must be rank 2, got " << weight;
  if (input.getRows() != out.getRows())
    return emitOpError() << "input rows (" << input.getRows() << ") and out rows ("
                         << out.getRows() << ") differ";
  if (weight.getDimSize(1) != input.getCols() || weight.getDimSize(0) != out.getCols())
    return emitOpError() << "weight " << weight << " does not map " << input.getCols()
                         << " input columns to " << out.getCols() << " output columns";
  if (weight.getElementType() != input.getElementType())
    return emitOpError() << "weight and input element types differ";
  if (Value bias = getBias()) {
    auto biasType = cast<MemRefType>(bias.getType());
    if (biasType.getRank() != 1 || biasType.getDimSize(0) != out.getCols())
      return emitOpError() << "bias " << biasType << " does not match " << out.getCols()
                           << " output columns";
  }
  return success();
}
