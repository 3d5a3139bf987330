// The backend the backend_test suites run on: LLMC_TEST_BACKEND (cpu by
// default; cuda on the GPU machine, where test/gpu/check.py runs them), with
// the kernels of the plan at LLMC_TEST_ENGINE loaded (the CUDA backend loads
// its own kernels, sampling and the GEMV, with a plan's).
#pragma once

#include "runtime/backend/Backend.h"
#include "runtime/plan/PlanFile.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

namespace llmc {

class BackendUnderTest : public ::testing::Test {
protected:
  void SetUp() override {
    backend_ = runtime::createBackend(env("LLMC_TEST_BACKEND", "cpu"));
    plan_ = std::make_unique<plan::PlanFile>(plan::PlanFile::load(env("LLMC_TEST_ENGINE", "")));
    backend_->loadKernels(plan_->plan());
  }

  std::unique_ptr<runtime::Backend> backend_;
  std::unique_ptr<plan::PlanFile> plan_;

private:
  static std::string env(const char *name, const char *fallback) {
    const char *value = std::getenv(name);
    return value && *value ? value : fallback;
  }
};

} // namespace llmc
