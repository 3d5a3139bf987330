// llmrun: runs llmc engines.
//
//   llmrun generate ENGINE_DIR --weights MODEL_DIR --prompt-ids 1,2,3 [...]
//   llmrun logits   ENGINE_DIR --weights MODEL_DIR --prompt-ids 1,2,3 --out FILE.safetensors
//   llmrun bench    ENGINE_DIR (--weights MODEL_DIR | --random-weights)
//   llmrun tokenize ENGINE_OR_MODEL_DIR [--decode]   (text on stdin, ids out; or the reverse)
//   llmrun serve    ENGINE_DIR (--weights MODEL_DIR | --random-weights) [--host --port --api-key ...]
//
// Links no LLVM/MLIR and starts on machines without a GPU or driver.

#include "runtime/backend/Backend.h"
#include "runtime/sched/Scheduler.h"
#include "runtime/serve/Server.h"
#include "runtime/engine/GenerationConfig.h"
#include "runtime/engine/Scoring.h"
#include "runtime/plan/PlanFile.h"
#include "runtime/text/Tokenizer.h"
#include "runtime/weights/safetensors.h"
#include "tools/llmrun/Engine.h"
#include "tools/llmrun/bench.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

namespace {

using namespace llmc;
namespace fs = std::filesystem;

std::vector<int32_t> parseIds(const std::string &text) {
  std::vector<int32_t> ids;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception &) {
      used = 0;
    }
    if (used == 0 || used != item.size() || value < INT32_MIN || value > INT32_MAX)
      throw std::invalid_argument("--prompt-ids: '" + item + "' is not a token id");
    ids.push_back(int32_t(value));
  }
  if (ids.empty())
    throw std::invalid_argument("--prompt-ids: no token ids in '" + text + "'");
  return ids;
}

// The tokenizer.json of an engine or model directory, if it has one.
std::optional<text::Tokenizer> loadTokenizer(const std::string &dir) {
  fs::path path = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(path))
    return std::nullopt;
  return text::Tokenizer::fromFile(path.string());
}

struct Options : EngineOptions {
  std::string out;
  std::vector<std::string> prompts, texts, stop;
  std::vector<int32_t> stop_token_ids;
  bool add_bos = false;
  int max_tokens = 16, min_tokens = 0, logprobs = 0;
  bool ignore_eos = false, json = false;
  std::optional<float> temperature, top_p, min_p;
  std::optional<int> top_k;
  std::optional<uint64_t> seed;
  int64_t tokens_per_forward = 0, seqs_per_forward = 0;
  serve::ServerOptions server;
  std::string served_model_name;
  bool no_prefix_caching = false;
};

int runGenerate(const Options &o) {
  Engine engine(o);
  const runtime::GenerationConfig defaults = runtime::GenerationConfig::load(o.engine, engine.plan.plan());
  sample::SamplingParams sampling = defaults.sampling;
  if (o.temperature)
    sampling.temperature = *o.temperature;
  sampling.top_p = o.top_p.value_or(sampling.top_p);
  sampling.top_k = o.top_k.value_or(sampling.top_k);
  sampling.min_p = o.min_p.value_or(0.0f);
  sampling.seed = o.seed;
  sampling.logprobs = o.logprobs;

  std::optional<text::Tokenizer> tokenizer = loadTokenizer(o.engine);
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string &ids : o.prompts)
    prompts.push_back(parseIds(ids));
  for (const std::string &text : o.texts) {
    if (!tokenizer)
      throw std::invalid_argument("--prompt needs a tokenizer.json in the engine directory (use --prompt-ids)");
    prompts.push_back(tokenizer->encode(text));
  }
  if (prompts.empty())
    throw std::invalid_argument("give at least one --prompt or --prompt-ids");
  const int64_t bos = engine.plan.plan().model()->bos_token_id();
  if (o.add_bos) {
    if (bos < 0)
      throw std::invalid_argument("--add-bos: the model has no beginning-of-sequence token");
    for (auto &prompt : prompts)
      prompt.insert(prompt.begin(), int32_t(bos));
  }
  std::vector<runtime::GenerationRequest> requests;
  for (auto &prompt : prompts)
    requests.push_back({std::move(prompt), sampling, o.max_tokens, o.min_tokens, o.ignore_eos,
                        o.stop_token_ids, o.stop});

  runtime::SchedulerOptions options;
  options.tokens_per_forward = o.tokens_per_forward;
  options.eos_token_ids = defaults.eos_token_ids;
  options.seed = o.seed.value_or(uint64_t(std::random_device{}()));
  options.tokenizer = tokenizer ? &*tokenizer : nullptr;

  auto results = runtime::generate(*engine.executor, *engine.pages, requests, options);
  for (const runtime::GenerationResult &result : results) {
    if (o.json) {
      nlohmann::json line = {{"tokens", result.tokens}, {"finish_reason", result.finish_reason}};
      if (tokenizer)
        line["text"] = result.text;
      if (o.logprobs > 0) {
        nlohmann::json logprobs = nlohmann::json::array();
        for (const sample::SampleResult &s : result.samples) {
          nlohmann::json top = nlohmann::json::array();
          for (const sample::TokenLogprob &t : s.top)
            top.push_back({{"token", t.token}, {"logprob", t.logprob}});
          logprobs.push_back({{"token", s.token}, {"logprob", s.logprob}, {"top", top}});
        }
        line["logprobs"] = logprobs;
      }
      std::cout << line.dump() << "\n";
    } else {
      for (size_t i = 0; i < result.tokens.size(); ++i)
        std::cout << (i ? "," : "") << result.tokens[i];
      std::cout << "\n";
      if (tokenizer)
        std::cout << result.text << "\n";
    }
  }
  return 0;
}

// Text on stdin -> comma-separated ids, or (--decode) ids -> text.
int runTokenize(const std::string &dir, bool decode) {
  std::optional<text::Tokenizer> tokenizer = loadTokenizer(dir);
  if (!tokenizer)
    throw std::invalid_argument("no tokenizer.json in " + dir);
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (decode) {
    while (!input.empty() && (input.back() == '\n' || input.back() == ' '))
      input.pop_back();
    std::vector<int32_t> ids = input.empty() ? std::vector<int32_t>{} : parseIds(input);
    for (int32_t id : ids)
      if (id < 0 || id >= tokenizer->vocabSize())
        throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary");
    std::cout << tokenizer->decode(ids);
    return 0;
  }
  std::vector<int32_t> ids = tokenizer->encode(input);
  for (size_t i = 0; i < ids.size(); ++i)
    std::cout << (i ? "," : "") << ids[i];
  std::cout << "\n";
  return 0;
}

int runLogits(const Options &o) {
  Engine engine(o);
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string &prompt : o.prompts)
    prompts.push_back(parseIds(prompt));
  if (prompts.empty())
    throw std::invalid_argument("give at least one --prompt-ids");
  auto logits = runtime::teacherForcedLogits(*engine.executor, *engine.pages, prompts);
  weights::SafetensorsWriter writer;
  const int64_t vocab = engine.executor->vocabSize();
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<std::byte> bytes(logits[i].size() * sizeof(float));
    std::memcpy(bytes.data(), logits[i].data(), bytes.size());
    writer.add("logits." + std::to_string(i), weights::DType::F32,
               {int64_t(prompts[i].size()), vocab}, std::move(bytes));
  }
  writer.write(o.out);
  std::cerr << "llmrun: wrote " << o.out << " (" << prompts.size() << " prompt"
            << (prompts.size() == 1 ? "" : "s") << ", vocab " << vocab << ")\n";
  return 0;
}

int runServe(const Options &o) {
  Engine engine(o);
  const plan::Plan &plan = engine.plan.plan();
  const runtime::GenerationConfig generation = runtime::GenerationConfig::load(o.engine, plan);
  const std::string name =
      o.served_model_name.empty() ? fs::absolute(o.engine).lexically_normal().filename().string() : o.served_model_name;
  // One sequence never outgrows the KV cache: a smaller cache than the
  // engine's context is the served context (/v1/models, length checks, a
  // chat request's default max_tokens).
  const int64_t context =
      std::min<int64_t>(engine.executor->maxSeqLen(), engine.pages->numPages() * engine.executor->pageSize());
  const serve::ServedModel model =
      serve::ServedModel::load(o.engine, name, context, engine.executor->vocabSize(), generation);
  runtime::SchedulerOptions options;
  options.tokens_per_forward = o.tokens_per_forward;
  options.seqs_per_forward = o.seqs_per_forward;
  options.eos_token_ids = generation.eos_token_ids;
  options.seed = o.seed.value_or(uint64_t(std::random_device{}()));
  options.tokenizer = model.tokenizer ? &*model.tokenizer : nullptr;
  options.prefix_caching = !o.no_prefix_caching;
  runtime::Scheduler scheduler(*engine.executor, *engine.pages, options);
  serve::EngineLoop loop(scheduler, *engine.pages, o.server.max_waiting_requests);
  serve::serve(o.server, model, *engine.executor, loop, [&](int port) {
    std::cerr << "llmrun: serving '" << name << "' (" << engine.pages->numPages() * engine.executor->pageSize()
              << " KV tokens, " << engine.backend->name() << ") on http://" << o.server.host << ":" << port
              << std::endl;
  });
  std::cerr << "llmrun: stopped\n";
  return 0;
}

// The engine options; returns --weights, which each command requires or
// makes exclusive with --random-weights.
CLI::Option *addEngineOptions(CLI::App *command, Options &o) {
  command->add_option("engine_dir", o.engine, "Engine directory (from llmc compile)")->required();
  CLI::Option *weights = command->add_option("--weights", o.weights, "Model directory with the safetensors checkpoint");
  command->add_option("--backend", o.backend, "cpu, cuda or auto")->capture_default_str();
  command->add_option("--kv-cache-tokens", o.kv_cache_tokens, "Tokens the KV cache holds");
  command->add_option("--gpu-memory-fraction", o.gpu_memory_fraction,
                      "Share of free GPU memory for weights, workspace and KV pages")
      ->check(CLI::Range(0.05, 1.0))
      ->capture_default_str();
  return weights;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"llmrun: run llmc engines"};
  app.require_subcommand(1);
  Options o;

  auto *generate = app.add_subcommand("generate", "Generate tokens for one or more prompts");
  addEngineOptions(generate, o)->required();
  generate->add_option("--prompt-ids", o.prompts, "Comma-separated token ids (repeat for a batch)");
  generate->add_option("--max-tokens", o.max_tokens, "Tokens to generate at most")->capture_default_str();
  generate->add_option("--min-tokens", o.min_tokens, "Mask end-of-sequence tokens until this many exist");
  generate->add_flag("--ignore-eos", o.ignore_eos, "Do not stop at end-of-sequence tokens");
  generate->add_option("--temperature", o.temperature, "0 = greedy (default: generation_config.json)");
  generate->add_option("--top-k", o.top_k, "Keep the k most likely tokens (0: off)");
  generate->add_option("--top-p", o.top_p, "Nucleus sampling threshold");
  generate->add_option("--min-p", o.min_p, "Drop tokens below min_p x the top probability");
  generate->add_option("--seed", o.seed, "Random seed (reproducible sampling)");
  generate->add_option("--logprobs", o.logprobs, "Top-N logprobs per token (with --json)");
  generate->add_option("--tokens-per-forward", o.tokens_per_forward,
                       "Token budget of one forward (smaller: chunked prefill)");
  generate->add_flag("--json", o.json, "One JSON object per prompt");
  generate->add_option("--prompt", o.texts, "Prompt text, encoded with the engine's tokenizer (repeatable)");
  generate->add_flag("--add-bos", o.add_bos, "Put the model's beginning-of-sequence token first");
  generate->add_option("--stop", o.stop, "Stop string (repeatable; not part of the output text)");
  generate->add_option("--stop-token-ids", o.stop_token_ids, "Token ids that end a sequence")->delimiter(',');

  auto *logits = app.add_subcommand("logits", "Write teacher-forced logits of the prompts");
  addEngineOptions(logits, o)->required();
  logits->add_option("--prompt-ids", o.prompts, "Comma-separated token ids (repeat for a batch)");
  logits->add_option("--out", o.out, "Output .safetensors file (logits.<i>: [length, vocab] f32)")
      ->required();

  auto *serveCommand = app.add_subcommand("serve", "OpenAI-compatible HTTP server");
  bool serveRandom = false;
  serveCommand
      ->add_flag("--random-weights", serveRandom,
                 "Deterministic random weights instead of a checkpoint (benchmarking the server)")
      ->excludes(addEngineOptions(serveCommand, o));
  serveCommand->add_option("--host", o.server.host, "Address to listen on")->capture_default_str();
  serveCommand->add_option("--port", o.server.port, "Port (0: any free port)")->capture_default_str();
  serveCommand->add_option("--api-key", o.server.api_key, "Require 'Authorization: Bearer KEY'")
      ->envname("LLMRUN_API_KEY");
  serveCommand->add_option("--served-model-name", o.served_model_name, "Model name (default: the engine directory's)");
  serveCommand->add_option("--max-queued-requests", o.server.max_waiting_requests,
                           "Requests waiting at once; more get 429")->capture_default_str();
  serveCommand->add_option("--max-request-bytes", o.server.max_request_bytes, "Larger bodies get 413")
      ->capture_default_str();
  serveCommand->add_option("--max-connections", o.server.max_connections, "Connections served at once")
      ->capture_default_str();
  serveCommand->add_option("--tokens-per-forward", o.tokens_per_forward, "Token budget of one forward");
  serveCommand->add_option("--max-seqs-per-forward", o.seqs_per_forward, "Sequences in one forward");
  serveCommand->add_flag("--no-prefix-caching", o.no_prefix_caching, "Do not share KV pages of equal prefixes");
  serveCommand->add_option("--seed", o.seed, "Seed for requests without one");

  BenchOptions bench;
  bool randomWeights = false;
  auto *benchCommand = app.add_subcommand("bench", "Decode/prefill throughput and cold start (CUDA)");
  benchCommand->add_option("engine_dir", bench.engine, "Engine directory")->required();
  auto *weightsOption = benchCommand->add_option("--weights", bench.weights, "Model directory");
  benchCommand->add_flag("--random-weights", randomWeights, "Random weights instead of a checkpoint")
      ->excludes(weightsOption);
  benchCommand->add_option("--batch-sizes", bench.batches, "Decode batch sizes")->delimiter(',');
  benchCommand->add_option("--contexts", bench.contexts, "Decode context lengths")->delimiter(',');
  benchCommand->add_option("--repeats", bench.repeats, "Timed repeats per figure")->capture_default_str();
  benchCommand->add_option("--kv-cache-tokens", bench.kv_cache_tokens,
                           "Tokens the KV cache holds (default: what 90% of free GPU memory leaves; a small "
                           "cache keeps Nsight Compute's kernel replays short)");
  benchCommand->add_flag("!--no-dependent-launch", bench.dependent_launch,
                         "Launch each kernel only after the previous one has finished (for comparison)");
  benchCommand->add_option("--gemm", bench.gemm,
                           "GEMM kernels: tuned (start-up's choice), gemv (wherever it takes the GEMM) or "
                           "cublaslt, for comparison")
      ->check(CLI::IsMember({"tuned", "gemv", "cublaslt"}))
      ->capture_default_str();

  BenchServeOptions benchServe;
  bool benchServeRandom = false, benchServeNoCache = false;
  auto *benchServeCommand =
      app.add_subcommand("bench-serve", "Serving throughput and latency under a synthetic workload (any backend)");
  benchServeCommand->add_option("engine_dir", benchServe.engine.engine, "Engine directory")->required();
  auto *benchServeWeights = benchServeCommand->add_option("--weights", benchServe.engine.weights, "Model directory");
  benchServeCommand->add_flag("--random-weights", benchServeRandom, "Random weights instead of a checkpoint")
      ->excludes(benchServeWeights);
  benchServeCommand->add_option("--backend", benchServe.engine.backend, "cpu, cuda or auto")->capture_default_str();
  benchServeCommand->add_option("--kv-cache-tokens", benchServe.engine.kv_cache_tokens, "Tokens the KV cache holds");
  benchServeCommand->add_option("--gpu-memory-fraction", benchServe.engine.gpu_memory_fraction,
                                "Share of free GPU memory for weights, workspace and KV pages")
      ->check(CLI::Range(0.05, 1.0))
      ->capture_default_str();
  benchServeCommand->add_option("--num-requests", benchServe.num_requests, "Requests")->capture_default_str();
  benchServeCommand->add_option("--input-len", benchServe.input_len, "Prompt tokens of each request (after the prefix)")
      ->capture_default_str();
  benchServeCommand->add_option("--output-len", benchServe.output_len, "Generated tokens per request")
      ->capture_default_str();
  benchServeCommand->add_option("--shared-prefix-len", benchServe.shared_prefix_len,
                                "Tokens every prompt starts with");
  benchServeCommand->add_option("--concurrency", benchServe.concurrency, "Requests in flight at most (0: unlimited)");
  benchServeCommand->add_option("--request-rate", benchServe.request_rate, "Poisson arrivals per second (0: all at once)");
  benchServeCommand->add_flag("--no-prefix-caching", benchServeNoCache, "Do not share KV pages of equal prefixes");
  benchServeCommand->add_option("--tokens-per-forward", benchServe.tokens_per_forward, "Token budget of one forward");
  benchServeCommand->add_option("--max-seqs-per-forward", benchServe.seqs_per_forward, "Sequences in one forward");
  benchServeCommand->add_option("--seed", benchServe.seed, "Seed of the random prompts")->capture_default_str();
  benchServeCommand->add_option("--temperature", benchServe.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str();
  benchServeCommand->add_option("--top-k", benchServe.top_k, "Top-k filter (0: off)")->capture_default_str();
  benchServeCommand->add_option("--top-p", benchServe.top_p, "Top-p filter (1: off)")->capture_default_str();

  std::string tokenizeDir;
  bool decode = false;
  auto *tokenize = app.add_subcommand("tokenize", "Text on stdin to token ids (--decode: the reverse)");
  tokenize->add_option("dir", tokenizeDir, "Engine or model directory with tokenizer.json")->required();
  tokenize->add_flag("--decode", decode, "Read comma-separated ids, print text");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*tokenize)
      return runTokenize(tokenizeDir, decode);
    if (*benchCommand) {
      if (!randomWeights && bench.weights.empty())
        throw std::invalid_argument("bench needs --weights MODEL_DIR or --random-weights");
      return runBench(bench);
    }
    if (*serveCommand) {
      if (!serveRandom && o.weights.empty())
        throw std::invalid_argument("serve needs --weights MODEL_DIR or --random-weights");
      return runServe(o);
    }
    if (*benchServeCommand) {
      if (!benchServeRandom && benchServe.engine.weights.empty())
        throw std::invalid_argument("bench-serve needs --weights MODEL_DIR or --random-weights");
      benchServe.prefix_caching = !benchServeNoCache;
      return runBenchServe(benchServe);
    }
    return *generate ? runGenerate(o) : runLogits(o);
  } catch (const std::exception &error) {
    std::cerr << "llmrun: error: " << error.what() << "\n";
    return 1;
  }
}
