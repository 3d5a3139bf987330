#include "runtime/engine/GenerationConfig.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace llmc::runtime {

GenerationConfig GenerationConfig::load(const std::string &engine_dir, const plan::Plan &plan) {
  nlohmann::json file = nlohmann::json::object();
  if (std::ifstream in(std::filesystem::path(engine_dir) / "generation_config.json"); in) {
    file = nlohmann::json::parse(in, nullptr, false);
    if (!file.is_object())
      file = nlohmann::json::object();
  }
  auto number = [&](const char *key, auto fallback) {
    auto it = file.find(key);
    return it != file.end() && it->is_number() ? it->get<decltype(fallback)>() : fallback;
  };
  GenerationConfig config;
  const auto doSample = file.find("do_sample");
  if (doSample != file.end() && doSample->is_boolean() && doSample->get<bool>()) {
    config.sampling.temperature = number("temperature", 1.0f);
    config.sampling.top_p = number("top_p", 1.0f);
    config.sampling.top_k = number("top_k", 0);
  } else {
    config.sampling.temperature = 0;
  }
  if (const auto *eos = plan.model()->eos_token_ids())
    config.eos_token_ids.assign(eos->begin(), eos->end());
  if (auto it = file.find("eos_token_id"); it != file.end())
    for (const auto &id : it->is_array() ? *it : nlohmann::json::array({*it}))
      if (id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < plan.model()->vocab_size() &&
          std::count(config.eos_token_ids.begin(), config.eos_token_ids.end(), id.get<int32_t>()) == 0)
        config.eos_token_ids.push_back(id.get<int32_t>());
  return config;
}

} // namespace llmc::runtime
