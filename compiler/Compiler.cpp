// `llmc compile`: config.json -> llm IR -> (checkpoint check) -> fusion ->
// exec -> plan.llmp, printing any requested stage on the way.

#include "compiler/Compiler.h"

#include "compiler/PlanEmitter.h"
#include "models/DecoderBuilder.h"
#include "passes/Passes.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/support/Hash.h"
#include "runtime/weights/Recipes.h"
#include "runtime/weights/safetensors.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_os_ostream.h"

#include <flatbuffers/idl.h>

#ifdef LLMC_HAVE_NVRTC
#include "runtime/jit/Nvrtc.h"
#include "runtime/jit/RuntimeModules.h"
#endif

#include <chrono>
#include <future>
#include <cstring>
#include <iomanip>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

namespace llmc {
namespace {

namespace fs = std::filesystem;

constexpr const char *kPlanSchema =
#include "compiler/plan_schema.inc"
    ;

/// Files copied from the model directory into the engine when present.
constexpr const char *kCopiedFiles[] = {"config.json",         "generation_config.json",
                                        "tokenizer.json",      "tokenizer_config.json",
                                        "special_tokens_map.json", "chat_template.jinja"};

class Progress {
public:
  Progress(bool enabled, int steps) : enabled(enabled), steps(steps) {}
  void step(const std::string &what) {
    if (!enabled)
      return;
    auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cerr << "[" << ++done << "/" << steps << "] " << what << " (" << std::fixed
              << std::setprecision(2) << elapsed << " s)\n";
  }

private:
  bool enabled;
  int steps, done = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

/// Collects MLIR diagnostics so that failures become one CompileError.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(mlir::MLIRContext &context)
      : handler(&context, [this](mlir::Diagnostic &diagnostic) {
          if (!messages.empty())
            messages += "; ";
          messages += diagnostic.str();
          return mlir::success();
        }) {}
  [[noreturn]] void fail(const std::string &what) const {
    throw CompileError(what + (messages.empty() ? "" : ": " + messages));
  }

private:
  std::string messages;
  mlir::ScopedDiagnosticHandler handler;
};

bool hasCheckpoint(const fs::path &dir) {
  return fs::exists(dir / "model.safetensors") || fs::exists(dir / "model.safetensors.index.json");
}

// Checks the checkpoint's safetensors headers against the plan's weight
// recipes: the same check the runtime makes when it binds the weights.
void checkCheckpoint(const plan::PlanFile &file, const std::string &model_dir, std::ostream &log) {
  weights::Checkpoint checkpoint = weights::Checkpoint::open(model_dir);
  runtime::RecipeReport report = runtime::checkRecipes(*file.plan().ranks()->Get(0), checkpoint);
  for (const std::string &name : report.unused)
    log << "llmc: warning: checkpoint in " << model_dir << ": unused tensor '" << name << "'\n";
  runtime::throwIfInvalid(report, model_dir);
}

void runPasses(mlir::ModuleOp module, DiagnosticCollector &diagnostics,
               void (*build)(mlir::OpPassManager &, const CompilePipelineOptions &),
               const CompileOptions &options, const char *what) {
  mlir::PassManager pm(module.getContext());
  build(pm, CompilePipelineOptions{options.fuse});
  if (mlir::failed(pm.run(module)))
    diagnostics.fail(what);
}

// Every kernel for every requested arch, compiled in parallel with NVRTC.
std::vector<std::vector<PrecompiledKernel>> precompileKernels(const std::vector<KernelSource> &kernels,
                                                             const std::vector<std::string> &archs) {
#ifdef LLMC_HAVE_NVRTC
  std::vector<std::vector<PrecompiledKernel>> binaries(kernels.size());
  std::vector<std::future<PrecompiledKernel>> jobs;
  for (const KernelSource &kernel : kernels)
    for (const std::string &arch : archs)
      jobs.push_back(std::async(std::launch::async, [&kernel, &arch] {
        jit::CompiledModule compiled =
            jit::compileModule(kernel.name, kernel.source, {kernel.entry}, kernel.options, arch);
        return PrecompiledKernel{arch, compiled.lowered_names.at(0), std::move(compiled.cubin)};
      }));
  for (size_t i = 0; i < jobs.size(); ++i) {
    try {
      binaries[i / archs.size()].push_back(jobs[i].get());
    } catch (const std::exception &error) {
      throw CompileError(error.what());
    }
  }
  return binaries;
#else
  throw CompileError("--arch needs NVRTC, and this llmc was built without the CUDA toolkit");
#endif
}

void printModule(mlir::ModuleOp module, std::ostream &out) {
  llvm::raw_os_ostream stream(out);
  module.print(stream);
  stream << "\n";
}

void printPlanJson(const std::vector<uint8_t> &bytes, std::ostream &out) {
  flatbuffers::IDLOptions idl;
  idl.strict_json = true;
  idl.output_default_scalars_in_json = true;
  flatbuffers::Parser parser(idl);
  std::string json;
  const uint8_t *root = bytes.data() + sizeof(flatbuffers::uoffset_t);  // skip the size prefix
  if (!parser.Parse(kPlanSchema) || !flatbuffers::GenerateText(parser, root, &json))
    throw CompileError("cannot print the plan as JSON: " + parser.error_);
  out << json;
}

void writeFileAtomically(const fs::path &path, const std::vector<uint8_t> &bytes) {
  fs::path temporary = path.string() + ".tmp";
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    file.write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
    if (!file)
      throw CompileError("cannot write " + temporary.string());
  }
  fs::rename(temporary, path);
}

} // namespace

void compile(const CompileOptions &options, std::ostream &out, std::ostream &log) {
  const bool check = hasCheckpoint(options.model_dir);
  Progress progress(options.progress, 5 + (check ? 1 : 0) + (options.output_dir.empty() ? 0 : 1));

  models::DecoderConfig config;
  try {
    config = models::loadDecoderConfig(options.model_dir);
  } catch (const models::ConfigError &error) {
    throw CompileError(error.what());
  }
  if (options.max_tokens_per_forward <= 0 || options.max_tokens_per_forward % 16 != 0)
    throw CompileError("--max-tokens-per-forward must be a positive multiple of 16");
  if (options.max_seqs_per_forward <= 0 || options.max_seqs_per_forward > options.max_tokens_per_forward)
    throw CompileError("--max-seqs-per-forward must be in [1, max tokens per forward]");
  progress.step("read config.json (" + config.architecture + ")");

  mlir::DialectRegistry registry;
  registerAll(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  DiagnosticCollector diagnostics(context);

  mlir::OwningOpRef<mlir::ModuleOp> module;
  try {
    module = models::buildDecoder(
        context, config, {options.dtype, options.max_seq_len, options.kv_page_size});
  } catch (const models::ConfigError &error) {
    throw CompileError(error.what());
  }
  if (mlir::failed(mlir::verify(*module)))
    diagnostics.fail("the model graph does not verify");
  progress.step("built the llm graph");

  if (options.emit == "llm")
    printModule(*module, out);

  runPasses(*module, diagnostics, buildFusionPipeline, options, "fusion failed");
  progress.step("fused");
  if (options.emit == "llm-fused")
    printModule(*module, out);

  runPasses(*module, diagnostics, buildLoweringPipeline, options, "lowering to exec failed");
  progress.step("lowered to exec and planned memory");
  if (options.emit == "exec")
    printModule(*module, out);

  EmitOptions emitOptions{options.max_tokens_per_forward, options.max_seqs_per_forward, {}};
  if (!options.archs.empty()) {
    emitOptions.precompile = [&](const std::vector<KernelSource> &kernels) {
      return precompileKernels(kernels, options.archs);
    };
#ifdef LLMC_HAVE_NVRTC
    emitOptions.runtime_modules = jit::runtimeModules();
#endif
  }
  mlir::FailureOr<std::vector<uint8_t>> bytes = emitPlan(*module, emitOptions);
  if (mlir::failed(bytes))
    diagnostics.fail("plan emission failed");
  // What we write must be what the runtime accepts.
  plan::PlanFile emitted = plan::PlanFile::fromBytes(*bytes, "emitted plan");
  progress.step("emitted the plan (" + std::to_string(bytes->size()) + " bytes)");
  if (check) {
    try {
      checkCheckpoint(emitted, options.model_dir, log);
    } catch (const std::runtime_error &error) {  // SafetensorsError or WeightError
      throw CompileError(error.what());
    }
    progress.step("checked the checkpoint's tensors against the weight recipes");
  }
  if (options.emit == "plan")
    printPlanJson(*bytes, out);

  if (!options.output_dir.empty()) {
    fs::path dir = options.output_dir;
    std::error_code error;
    fs::create_directories(dir, error);
    if (error)
      throw CompileError("cannot create engine directory " + dir.string() + ": " + error.message());
    writeFileAtomically(dir / "plan.llmp", *bytes);
    for (const char *name : kCopiedFiles)
      if (fs::path source = fs::path(options.model_dir) / name; fs::exists(source))
        fs::copy_file(source, dir / name, fs::copy_options::overwrite_existing);
    progress.step("wrote " + (dir / "plan.llmp").string());
  }
}

void writeRandomWeights(const std::string &model_dir, uint64_t seed, std::ostream &log) {
  models::DecoderConfig config;
  try {
    config = models::loadDecoderConfig(model_dir);
  } catch (const models::ConfigError &error) {
    throw CompileError(error.what());
  }
  mlir::DialectRegistry registry;
  registerAll(registry);
  mlir::MLIRContext context(registry);
  auto module = models::buildDecoder(context, config, {});

  const weights::DType dtype = config.dtype == "bf16"  ? weights::DType::BF16
                               : config.dtype == "f16" ? weights::DType::F16
                                                       : weights::DType::F32;
  weights::SafetensorsWriter writer;
  writer.setMetadata({{"format", "pt"}});
  int64_t total = 0;
  std::vector<std::pair<std::string, std::vector<int64_t>>> params;
  module->walk([&](llm::ParamOp op) {
    auto shape = op.getType().getShape();
    params.push_back({op.getName().str(), {shape.begin(), shape.end()}});
  });
  for (const auto &[name, shape] : params) {
    int64_t count = 1;
    for (int64_t dim : shape)
      count *= dim;
    total += count;
    // Each tensor has its own stream, so values do not depend on tensor order.
    std::mt19937_64 engine(seed ^ fnv1a(name));
    std::normal_distribution<float> normal(0.0f, 0.02f);
    const bool isNorm = name.find("norm") != std::string::npos;
    const bool isBias = name.ends_with(".bias");
    std::vector<std::byte> bytes(size_t(count) * weights::dtypeBytes(dtype));
    for (int64_t i = 0; i < count; ++i) {
      float value = isNorm ? 1.0f : isBias ? 0.0f : normal(engine);
      if (dtype == weights::DType::F32) {
        std::memcpy(&bytes[size_t(i) * 4], &value, 4);
      } else {
        uint16_t half = dtype == weights::DType::BF16 ? weights::floatToBf16(value)
                                                      : weights::floatToHalf(value);
        std::memcpy(&bytes[size_t(i) * 2], &half, 2);
      }
    }
    writer.add(name, dtype, shape, std::move(bytes));
  }
  fs::path path = fs::path(model_dir) / "model.safetensors";
  writer.write(path.string());
  log << "llmc: wrote " << path.string() << " (" << total << " parameters, random, seed " << seed
      << ")\n";
}

} // namespace llmc
