// A CUPTI injection library: loaded by the CUDA driver when
// CUDA_INJECTION64_PATH names it, it records every kernel's start and end on
// the GPU (graph-launched kernels too, without serialising them) and writes
// one tab-separated line per kernel to $KERNEL_TRACE_FILE. Nsight Systems
// does not run on the GPU machine; this gives the decode graph's timeline
// (test/gpu/trace_step.py reads it). Built there by `test/gpu/run.sh trace`.
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

// The newest kernel record of the CUPTI at hand (run.sh finds its name in
// the header).
#ifndef KERNEL_RECORD
#error "define KERNEL_RECORD as the header's newest CUpti_ActivityKernelN"
#endif

namespace {

FILE *traceFile = nullptr;
std::mutex traceMutex;

void check(CUptiResult result, const char *what) {
  if (result == CUPTI_SUCCESS)
    return;
  const char *text = "?";
  cuptiGetResultString(result, &text);
  std::fprintf(stderr, "kernel_trace: %s: %s\n", what, text);
  std::exit(1);
}

void CUPTIAPI giveBuffer(uint8_t **buffer, size_t *size, size_t *maxRecords) {
  *size = size_t(16) << 20;
  *buffer = static_cast<uint8_t *>(std::aligned_alloc(8, *size));
  *maxRecords = 0;
}

void CUPTIAPI takeBuffer(CUcontext, uint32_t, uint8_t *buffer, size_t, size_t validSize) {
  std::lock_guard<std::mutex> lock(traceMutex);
  CUpti_Activity *record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, validSize, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
      continue;
    const auto *k = reinterpret_cast<const KERNEL_RECORD *>(record);
    std::fprintf(traceFile, "%llu\t%llu\t%u\t%u\t%llu\t%u\t%d\t%d\t%d\t%s\n", (unsigned long long)k->start,
                 (unsigned long long)k->end, k->correlationId, k->graphId, (unsigned long long)k->graphNodeId,
                 k->streamId, k->gridX, k->gridY, k->blockX, k->name ? k->name : "?");
  }
  std::free(buffer);
}

// Records still in CUPTI's buffers are delivered before a context goes and
// at exit.
void CUPTIAPI onResource(void *, CUpti_CallbackDomain, CUpti_CallbackId id, const void *) {
  if (id == CUPTI_CBID_RESOURCE_CONTEXT_DESTROY_STARTING)
    cuptiActivityFlushAll(1);
}

void flushAtExit() {
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(traceMutex);
  std::fflush(traceFile);
}

} // namespace

extern "C" int InitializeInjection() {
  const char *path = std::getenv("KERNEL_TRACE_FILE");
  traceFile = std::fopen(path ? path : "kernel_trace.tsv", "w");
  if (!traceFile) {
    std::perror("kernel_trace: KERNEL_TRACE_FILE");
    return 0;
  }
  std::fprintf(traceFile, "start\tend\tcorrelation\tgraph\tnode\tstream\tgrid_x\tgrid_y\tblock_x\tname\n");
  CUpti_SubscriberHandle subscriber;
  check(cuptiSubscribe(&subscriber, onResource, nullptr), "cuptiSubscribe");
  check(cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RESOURCE, CUPTI_CBID_RESOURCE_CONTEXT_DESTROY_STARTING),
        "cuptiEnableCallback");
  check(cuptiActivityRegisterCallbacks(giveBuffer, takeBuffer), "cuptiActivityRegisterCallbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable");
  std::atexit(flushAtExit);
  return 1;
}
