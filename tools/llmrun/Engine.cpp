#include "tools/llmrun/Engine.h"

#include "runtime/support/Math.h"

#include <algorithm>
#include <cstdio>
#include <unistd.h>

namespace llmc {

Engine::Engine(const EngineOptions &o)
    : plan(plan::PlanFile::load(o.engine)), backend(runtime::createBackend(o.backend)) {
  const plan::Plan &p = plan.plan();
  const int64_t pageSize = p.kv_cache()->page_size();
  runtime::ExecutorOptions options;
  if (o.kv_cache_tokens > 0) {
    options.kv_pages = ceilDiv(o.kv_cache_tokens, pageSize);
  } else if (std::optional<size_t> free = backend->freeMemory()) {
    options.kv_pages = runtime::kvPagesForMemory(p, *free, o.gpu_memory_fraction, int64_t(1) << 30);
  } else {
    const int64_t tokens = std::min<int64_t>(p.model()->max_seq_len() * 4, 65536);
    options.kv_pages = ceilDiv(tokens, pageSize);
  }
  if (isatty(STDERR_FILENO))
    options.load_progress = [](size_t done, size_t total) {
      std::fprintf(stderr, "\rllmrun: loading weights %5.1f%% (%.2f of %.2f GB)%s",
                   100.0 * double(done) / double(total), double(done) / 1e9, double(total) / 1e9,
                   done == total ? "\n" : "");
    };
  if (o.weights.empty()) {
    executor = std::make_unique<runtime::Executor>(plan, *backend, 1234, options);
  } else {
    checkpoint = weights::Checkpoint::open(o.weights);
    executor = std::make_unique<runtime::Executor>(plan, *backend, *checkpoint, o.weights, options);
  }
  pages = std::make_unique<runtime::BlockManager>(int32_t(options.kv_pages));
}

} // namespace llmc
