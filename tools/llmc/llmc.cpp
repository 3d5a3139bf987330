// llmc: the ahead-of-time compiler's command line.
//
//   llmc compile MODEL_DIR -o ENGINE_DIR [--emit=llm|llm-fused|exec|plan] ...
//   llmc inspect ENGINE_DIR [--json]
//   llmc init-weights MODEL_DIR [--seed N]

#include "compiler/Compiler.h"
#include "compiler/Inspect.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <unistd.h>

int main(int argc, char **argv) {
  CLI::App app{"llmc: compile Hugging Face Llama/Qwen2 checkpoints into llmc engines"};
  app.require_subcommand(1);

  llmc::CompileOptions compileOptions;
  bool quiet = false;
  auto *compile = app.add_subcommand("compile", "Compile MODEL_DIR (config.json, optional "
                                                "checkpoint) into ENGINE_DIR");
  compile->add_option("model_dir", compileOptions.model_dir, "Hugging Face model directory")
      ->required();
  compile->add_option("-o,--output", compileOptions.output_dir, "Engine directory to write");
  compile->add_option("--emit", compileOptions.emit, "Print a stage to stdout")
      ->check(CLI::IsMember({"llm", "llm-fused", "exec", "plan"}));
  compile->add_option("--dtype", compileOptions.dtype, "Compute dtype (default: the checkpoint's)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  compile->add_option("--max-seq-len", compileOptions.max_seq_len,
                      "Longest sequence (default: max_position_embeddings)");
  compile->add_option("--max-tokens-per-forward", compileOptions.max_tokens_per_forward,
                      "Most tokens in one forward (multiple of 16)")
      ->capture_default_str();
  compile->add_option("--max-seqs-per-forward", compileOptions.max_seqs_per_forward,
                      "Most sequences in one forward")
      ->capture_default_str();
  compile->add_option("--kv-page-size", compileOptions.kv_page_size, "Tokens per KV-cache page")
      ->capture_default_str();
  compile->add_flag("--no-fuse", [&](int64_t) { compileOptions.fuse = false; },
                    "Skip the fusion passes (lowering then fails on unfused ops)");
  compile->add_flag("-q,--quiet", quiet, "No progress output");
  compile->add_option("--arch", compileOptions.archs,
                      "Precompile every kernel for these GPU architectures (e.g. sm_90a for H100/H200)")
      ->delimiter(',')
      ->check(CLI::Validator([](std::string &arch) {
        if (arch == "sm_90")  // the runtime never asks for it: cubins nobody loads
          return std::string("sm_90: the CUDA backend runs sm_90a code on an H100/H200 (use --arch sm_90a)");
        return arch.rfind("sm_", 0) == 0 && arch.size() > 3 ? std::string() : "expected sm_NN, got " + arch;
      }, "sm_NN"));

  std::string engineDir;
  bool json = false;
  auto *inspect = app.add_subcommand("inspect", "Summarise an engine");
  inspect->add_option("engine_dir", engineDir, "Engine directory or plan.llmp")->required();
  inspect->add_flag("--json", json, "Print JSON");

  std::string weightsDir;
  uint64_t seed = 0;
  auto *initWeights = app.add_subcommand(
      "init-weights", "Write deterministic random weights (model.safetensors) for MODEL_DIR");
  initWeights->add_option("model_dir", weightsDir, "Model directory with config.json")->required();
  initWeights->add_option("--seed", seed, "Random seed")->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  try {
    if (*compile) {
      if (compileOptions.output_dir.empty() && compileOptions.emit.empty())
        throw llmc::CompileError("nothing to do: pass -o ENGINE_DIR and/or --emit=STAGE");
      compileOptions.progress = !quiet && isatty(STDERR_FILENO);
      llmc::compile(compileOptions, std::cout, std::cerr);
    } else if (*inspect) {
      llmc::inspectEngine(engineDir, json, std::cout);
    } else if (*initWeights) {
      llmc::writeRandomWeights(weightsDir, seed, std::cerr);
    }
  } catch (const std::exception &error) {
    std::cerr << "llmc: error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
