//===- LlmDialect.cpp - llm dialect: registration, attributes, verifiers ---===//

#include "dialects/llm/LlmDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <numbers>

using namespace mlir;
using namespace llmc::llm;

#include "dialects/llm/LlmDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/llm/LlmAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/llm/LlmOps.cpp.inc"

void LlmDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/llm/LlmAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialects/llm/LlmOps.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// RopeAttr
//===----------------------------------------------------------------------===//

// #llm.rope<theta = 500000.0, rotary_dim = 128, scaling = "llama3",
//           factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0,
//           original_max_positions = 8192>
Attribute RopeAttr::parse(AsmParser &parser, Type) {
  double theta = 0, factor = 1, lowFreqFactor = 1, highFreqFactor = 1;
  int64_t rotaryDim = 0, originalMaxPositions = 0;
  std::string scaling = "none";
  auto parseField = [&](StringRef key) -> ParseResult {
    if (parser.parseEqual())
      return failure();
    if (key == "theta") return parser.parseFloat(theta);
    if (key == "rotary_dim") return parser.parseInteger(rotaryDim);
    if (key == "scaling") return parser.parseString(&scaling);
    if (key == "factor") return parser.parseFloat(factor);
    if (key == "low_freq_factor") return parser.parseFloat(lowFreqFactor);
    if (key == "high_freq_factor") return parser.parseFloat(highFreqFactor);
    if (key == "original_max_positions") return parser.parseInteger(originalMaxPositions);
    return parser.emitError(parser.getCurrentLocation(), "unknown rope field '") << key << "'";
  };
  if (parser.parseLess())
    return {};
  do {
    StringRef key;
    if (parser.parseKeyword(&key) || parseField(key))
      return {};
  } while (succeeded(parser.parseOptionalComma()));
  if (parser.parseGreater())
    return {};
  return parser.getChecked<RopeAttr>(parser.getContext(), llvm::APFloat(theta), rotaryDim,
                                     scaling, llvm::APFloat(factor), llvm::APFloat(lowFreqFactor),
                                     llvm::APFloat(highFreqFactor), originalMaxPositions);
}

void RopeAttr::print(AsmPrinter &printer) const {
  auto printFloat = [&](const llvm::APFloat &value) { printer.printFloat(value); };
  printer << "<theta = ";
  printFloat(getTheta());
  printer << ", rotary_dim = " << getRotaryDim() << ", scaling = \"" << getScaling() << "\"";
  if (getScaling() == "llama3") {
    printer << ", factor = ";
    printFloat(getFactor());
    printer << ", low_freq_factor = ";
    printFloat(getLowFreqFactor());
    printer << ", high_freq_factor = ";
    printFloat(getHighFreqFactor());
    printer << ", original_max_positions = " << getOriginalMaxPositions();
  }
  printer << ">";
}

LogicalResult RopeAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               llvm::APFloat thetaValue, int64_t rotaryDim, StringRef scaling,
                               llvm::APFloat factorValue, llvm::APFloat lowFreqFactorValue,
                               llvm::APFloat highFreqFactorValue,
                               int64_t originalMaxPositions) {
  const double theta = thetaValue.convertToDouble(), factor = factorValue.convertToDouble();
  const double lowFreqFactor = lowFreqFactorValue.convertToDouble();
  const double highFreqFactor = highFreqFactorValue.convertToDouble();
  if (!(theta > 0))
    return emitError() << "rope theta must be positive, got " << theta;
  if (rotaryDim <= 0 || rotaryDim % 2 != 0)
    return emitError() << "rope rotary_dim must be positive and even, got " << rotaryDim;
  if (scaling == "none")
    return success();
  if (scaling != "llama3")
    return emitError() << "rope scaling must be \"none\" or \"llama3\", got \"" << scaling << "\"";
  if (!(factor > 0))
    return emitError() << "llama3 rope factor must be positive, got " << factor;
  if (!(lowFreqFactor > 0) || !(highFreqFactor > lowFreqFactor))
    return emitError() << "llama3 rope needs 0 < low_freq_factor < high_freq_factor, got "
                       << lowFreqFactor << " and " << highFreqFactor;
  if (originalMaxPositions <= 0)
    return emitError() << "llama3 rope original_max_positions must be positive, got "
                       << originalMaxPositions;
  return success();
}

// Hugging Face's default and llama3 rope initialisation, in double, rounded
// to float at the end (transformers computes the same values in fp32).
std::vector<float> RopeAttr::inverseFrequencies() const {
  const int64_t dim = getRotaryDim();
  const double theta = getTheta().convertToDouble(), factor = getFactor().convertToDouble();
  const double lowFreqFactor = getLowFreqFactor().convertToDouble();
  const double highFreqFactor = getHighFreqFactor().convertToDouble();
  std::vector<float> result(dim / 2);
  const double lowFreqWavelen = getOriginalMaxPositions() / lowFreqFactor;
  const double highFreqWavelen = getOriginalMaxPositions() / highFreqFactor;
  for (int64_t i = 0; i < dim / 2; ++i) {
    double invFreq = 1.0 / std::pow(theta, double(2 * i) / double(dim));
    if (getScaling() == "llama3") {
      const double wavelen = 2 * std::numbers::pi / invFreq;
      if (wavelen > lowFreqWavelen) {
        invFreq /= factor;
      } else if (wavelen >= highFreqWavelen) {
        const double smooth = (getOriginalMaxPositions() / wavelen - lowFreqFactor) /
                              (highFreqFactor - lowFreqFactor);
        invFreq = (1 - smooth) * invFreq / factor + smooth * invFreq;
      }
    }
    result[i] = float(invFreq);
  }
  return result;
}

//===----------------------------------------------------------------------===//
// Verifier helpers
//===----------------------------------------------------------------------===//

namespace {

RankedTensorType rankedType(Value value) { return dyn_cast<RankedTensorType>(value.getType()); }

// Activations are tensor<?xNxdtype>: one row per token (or per sequence).
LogicalResult verifyActivation(Operation *op, Value value, StringRef what) {
  auto type = rankedType(value);
  if (!type || type.getRank() != 2 || !type.isDynamicDim(0) || type.isDynamicDim(1))
    return op->emitOpError() << what << " must be a tensor<?xNxdtype> activation, got "
                             << value.getType();
  return success();
}

LogicalResult verifyStaticWeight(Operation *op, Value value, StringRef what, int64_t rank) {
  auto type = rankedType(value);
  if (!type || !type.hasStaticShape() || type.getRank() != rank)
    return op->emitOpError() << what << " must be a static rank-" << rank << " tensor, got "
                             << value.getType();
  return success();
}

int64_t columns(Value value) { return rankedType(value).getDimSize(1); }
Type elementType(Value value) { return rankedType(value).getElementType(); }

LogicalResult verifySameElementType(Operation *op, Value a, Value b, StringRef what) {
  if (elementType(a) != elementType(b))
    return op->emitOpError() << what << " element type " << elementType(b) << " differs from "
                             << elementType(a);
  return success();
}

LogicalResult verifyColumns(Operation *op, Value value, int64_t expected, StringRef what) {
  if (columns(value) != expected)
    return op->emitOpError() << what << " has " << columns(value) << " columns, expected "
                             << expected;
  return success();
}

LogicalResult verifyHeads(Operation *op, int64_t numHeads, int64_t numKvHeads, int64_t headDim) {
  if (numHeads <= 0 || numKvHeads <= 0 || headDim <= 0)
    return op->emitOpError() << "num_heads, num_kv_heads and head_dim must be positive";
  if (numHeads % numKvHeads != 0)
    return op->emitOpError() << "num_heads (" << numHeads << ") must be a multiple of num_kv_heads ("
                             << numKvHeads << ")";
  return success();
}

LogicalResult verifyAttentionScalars(Operation *op, int64_t layer, double scale, int64_t window) {
  if (layer < 0)
    return op->emitOpError() << "layer must be non-negative, got " << layer;
  if (!(scale > 0))
    return op->emitOpError() << "scale must be positive, got " << scale;
  if (window < 0)
    return op->emitOpError() << "sliding_window must be non-negative, got " << window;
  return success();
}

LogicalResult verifyRopeFits(Operation *op, RopeAttr rope, int64_t headDim) {
  if (rope.getRotaryDim() > headDim)
    return op->emitOpError() << "rope rotary_dim " << rope.getRotaryDim() << " exceeds head_dim "
                             << headDim;
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Op verifiers
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  if (getName().empty())
    return emitOpError() << "needs a non-empty checkpoint tensor name";
  auto type = getResult().getType();
  auto ranked = dyn_cast<RankedTensorType>(type);
  if (!ranked || !ranked.hasStaticShape() || ranked.getRank() < 1 || ranked.getRank() > 2)
    return emitOpError() << "result must be a static rank-1 or rank-2 tensor, got " << type;
  return success();
}

LogicalResult ConcatOp::verify() {
  if (getInputs().size() < 2)
    return emitOpError() << "needs at least two inputs";
  auto first = rankedType(getInputs().front());
  auto result = rankedType(getResult());
  int64_t axis = getAxis();
  if (!first || axis < 0 || axis >= first.getRank())
    return emitOpError() << "axis " << axis << " is out of range";
  int64_t total = 0;
  for (Value input : getInputs()) {
    auto type = rankedType(input);
    if (!type || type.getRank() != first.getRank() ||
        type.getElementType() != first.getElementType())
      return emitOpError() << "inputs must have one rank and element type, got " << input.getType();
    for (int64_t d = 0; d < type.getRank(); ++d)
      if (d != axis && type.getDimSize(d) != first.getDimSize(d))
        return emitOpError() << "inputs differ in dimension " << d << " (not the concat axis)";
    total += type.getDimSize(axis);
  }
  SmallVector<int64_t> expected(first.getShape());
  expected[axis] = total;
  if (!result || result.getShape() != ArrayRef<int64_t>(expected) ||
      result.getElementType() != first.getElementType())
    return emitOpError() << "result type " << getResult().getType()
                         << " does not match the concatenated inputs";
  return success();
}

LogicalResult EmbeddingOp::verify() {
  if (failed(verifyStaticWeight(*this, getTable(), "table", 2)) ||
      failed(verifyActivation(*this, getResult(), "result")) ||
      failed(verifySameElementType(*this, getTable(), getResult(), "result")))
    return failure();
  return verifyColumns(*this, getResult(), rankedType(getTable()).getDimSize(1), "result");
}

LogicalResult RmsNormOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")) ||
      failed(verifyStaticWeight(*this, getWeight(), "weight", 1)))
    return failure();
  if (getInput().getType() != getResult().getType())
    return emitOpError() << "result type must equal the input type";
  if (rankedType(getWeight()).getDimSize(0) != columns(getInput()))
    return emitOpError() << "weight size " << rankedType(getWeight()).getDimSize(0)
                         << " does not match hidden size " << columns(getInput());
  if (!(getEps().convertToDouble() > 0))
    return emitOpError() << "eps must be positive";
  return success();
}

LogicalResult AddRmsNormOp::verify() {
  if (failed(verifyActivation(*this, getLhs(), "lhs")) ||
      failed(verifyStaticWeight(*this, getWeight(), "weight", 1)))
    return failure();
  if (getLhs().getType() != getRhs().getType() || getSum().getType() != getLhs().getType() ||
      getNormed().getType() != getLhs().getType())
    return emitOpError() << "operands and results must all have one type";
  if (rankedType(getWeight()).getDimSize(0) != columns(getLhs()))
    return emitOpError() << "weight size " << rankedType(getWeight()).getDimSize(0)
                         << " does not match hidden size " << columns(getLhs());
  if (!(getEps().convertToDouble() > 0))
    return emitOpError() << "eps must be positive";
  return success();
}

LogicalResult LinearOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")) ||
      failed(verifyActivation(*this, getResult(), "result")) ||
      failed(verifyStaticWeight(*this, getWeight(), "weight", 2)) ||
      failed(verifySameElementType(*this, getInput(), getWeight(), "weight")) ||
      failed(verifySameElementType(*this, getInput(), getResult(), "result")))
    return failure();
  auto weight = rankedType(getWeight());
  if (weight.getDimSize(1) != columns(getInput()))
    return emitOpError() << "weight [" << weight.getDimSize(0) << ", " << weight.getDimSize(1)
                         << "] does not take " << columns(getInput()) << " input features";
  if (failed(verifyColumns(*this, getResult(), weight.getDimSize(0), "result")))
    return failure();
  if (Value bias = getBias()) {
    if (failed(verifyStaticWeight(*this, bias, "bias", 1)) ||
        failed(verifySameElementType(*this, getInput(), bias, "bias")))
      return failure();
    if (rankedType(bias).getDimSize(0) != weight.getDimSize(0))
      return emitOpError() << "bias size " << rankedType(bias).getDimSize(0)
                           << " does not match " << weight.getDimSize(0) << " output features";
  }
  return success();
}

LogicalResult SplitOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")))
    return failure();
  if (getResults().size() < 2)
    return emitOpError() << "needs at least two results";
  int64_t total = 0;
  for (Value result : getResults()) {
    if (failed(verifyActivation(*this, result, "result")) ||
        failed(verifySameElementType(*this, getInput(), result, "result")))
      return failure();
    total += columns(result);
  }
  if (total != columns(getInput()))
    return emitOpError() << "results cover " << total << " columns, input has "
                         << columns(getInput());
  return success();
}

LogicalResult RopeOp::verify() {
  if (failed(verifyActivation(*this, getInput(), "input")))
    return failure();
  if (getInput().getType() != getResult().getType())
    return emitOpError() << "result type must equal the input type";
  if (getNumHeads() <= 0 || getHeadDim() <= 0)
    return emitOpError() << "num_heads and head_dim must be positive";
  if (failed(verifyColumns(*this, getInput(), getNumHeads() * getHeadDim(), "input")))
    return failure();
  return verifyRopeFits(*this, getRope(), getHeadDim());
}

LogicalResult AttentionOp::verify() {
  int64_t nh = getNumHeads(), kvh = getNumKvHeads(), hd = getHeadDim();
  if (failed(verifyHeads(*this, nh, kvh, hd)) ||
      failed(verifyAttentionScalars(*this, getLayer(), getScale().convertToDouble(),
                                    getSlidingWindow())))
    return failure();
  for (auto [value, what] : {std::pair{getQuery(), "query"}, {getKey(), "key"},
                             {getValue(), "value"}, {getResult(), "result"}})
    if (failed(verifyActivation(*this, value, what)) ||
        failed(verifySameElementType(*this, getQuery(), value, what)))
      return failure();
  if (failed(verifyColumns(*this, getQuery(), nh * hd, "query")) ||
      failed(verifyColumns(*this, getKey(), kvh * hd, "key")) ||
      failed(verifyColumns(*this, getValue(), kvh * hd, "value")) ||
      failed(verifyColumns(*this, getResult(), nh * hd, "result")))
    return failure();
  return success();
}

LogicalResult RopeKvWriteOp::verify() {
  int64_t nh = getNumHeads(), kvh = getNumKvHeads(), hd = getHeadDim();
  if (failed(verifyHeads(*this, nh, kvh, hd)) || failed(verifyRopeFits(*this, getRope(), hd)) ||
      failed(verifyActivation(*this, getQkv(), "qkv")) ||
      failed(verifyActivation(*this, getQuery(), "result")) ||
      failed(verifySameElementType(*this, getQkv(), getQuery(), "result")))
    return failure();
  if (int64_t(getLayer()) < 0)
    return emitOpError() << "layer must be non-negative, got " << int64_t(getLayer());
  if (failed(verifyColumns(*this, getQkv(), (nh + 2 * kvh) * hd, "qkv")) ||
      failed(verifyColumns(*this, getQuery(), nh * hd, "result")))
    return failure();
  return success();
}

LogicalResult PagedAttentionOp::verify() {
  int64_t nh = getNumHeads(), hd = getHeadDim();
  if (failed(verifyHeads(*this, nh, getNumKvHeads(), hd)) ||
      failed(verifyAttentionScalars(*this, getLayer(), getScale().convertToDouble(),
                                    getSlidingWindow())) ||
      failed(verifyActivation(*this, getQuery(), "query")))
    return failure();
  if (getQuery().getType() != getResult().getType())
    return emitOpError() << "result type must equal the query type";
  return verifyColumns(*this, getQuery(), nh * hd, "query");
}

LogicalResult GatedSiluOp::verify() {
  if (failed(verifyActivation(*this, getGateUp(), "gate_up")) ||
      failed(verifyActivation(*this, getResult(), "result")) ||
      failed(verifySameElementType(*this, getGateUp(), getResult(), "result")))
    return failure();
  return verifyColumns(*this, getGateUp(), 2 * columns(getResult()), "gate_up");
}

LogicalResult LogitsOp::verify() {
  if (failed(verifyActivation(*this, getHidden(), "hidden")) ||
      failed(verifyStaticWeight(*this, getLmHead(), "lm_head", 2)) ||
      failed(verifyActivation(*this, getResult(), "result")) ||
      failed(verifySameElementType(*this, getHidden(), getLmHead(), "lm_head")))
    return failure();
  auto head = rankedType(getLmHead());
  if (head.getDimSize(1) != columns(getHidden()))
    return emitOpError() << "lm_head takes " << head.getDimSize(1) << " features, hidden has "
                         << columns(getHidden());
  return verifyColumns(*this, getResult(), head.getDimSize(0), "result");
}
