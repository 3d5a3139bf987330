#include "compiler/Inspect.h"

#include "runtime/plan/PlanFile.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <iomanip>
#include <map>
#include <set>
#include <ostream>
#include <sstream>

namespace llmc {
namespace {

using nlohmann::ordered_json;

std::string withCommas(int64_t value) {
  std::string digits = std::to_string(value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

std::string bytesText(double bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  std::ostringstream text;
  text << std::fixed << std::setprecision(unit ? 2 : 0) << bytes << " " << units[unit];
  return text.str();
}

// Everything the summary says, computed once from the plan.
ordered_json summarize(const plan::PlanFile &file, const std::string &path) {
  const plan::Plan &p = file.plan();
  const plan::ModelMeta &model = *p.model();
  const plan::RankProgram &rank = *p.ranks()->Get(0);

  int64_t paramCount = 0, paramBytes = 0;
  std::set<std::string> sourceTensors;
  for (const plan::Parameter *param : *rank.parameters()) {
    int64_t elements = 1;
    for (int64_t dim : *param->shape())
      elements *= dim;
    paramCount += elements;
    paramBytes += elements * plan::dtypeBytes(param->dtype());
    for (const auto *source : *param->sources())
      sourceTensors.insert(source->name()->str());
  }

  // Steps per decoder layer, by kind.
  std::map<int, std::map<std::string, int>> perLayer;
  std::map<std::string, int> kernelUses;
  for (const plan::Step *step : *rank.steps()) {
    std::string kind = "gemm";
    if (const plan::Launch *launch = step->op_as_Launch()) {
      std::string name = p.kernels()->Get(launch->kernel())->kernel_template()->str();
      kind = name == "paged_attention" ? "attention" : "kernel";
      kernelUses[name]++;
    }
    perLayer[step->layer()][kind]++;
  }
  const plan::KvCacheSpec &kv = *p.kv_cache();
  const int64_t kvBytesPerToken = plan::kvBytesPerToken(p);
  const int64_t workspace = plan::workspaceBytes(rank, p.max_tokens_per_forward(), p.max_seqs_per_forward());

  ordered_json eos = ordered_json::array();
  if (model.eos_token_ids())
    for (int64_t id : *model.eos_token_ids())
      eos.push_back(id);
  // The most steps of each kind that any one decoder layer has.
  ordered_json layerMax = ordered_json::object();
  for (const char *kind : {"kernel", "gemm", "attention"}) {
    int most = 0;
    for (auto &[layer, kinds] : perLayer)
      if (layer >= 0)
        most = std::max(most, kinds[kind]);
    layerMax[kind] = most;
  }
  ordered_json kernels = ordered_json::object();
  for (const auto &[name, uses] : kernelUses)
    kernels[name] = uses;
  // Architectures every module carries a binary for (llmc compile --arch).
  std::set<std::string> precompiled;
  bool first = true;
  for (const plan::KernelModule *kernel : *p.kernels()) {
    std::set<std::string> archs;
    if (kernel->cubins())
      for (const plan::Cubin *cubin : *kernel->cubins())
        archs.insert(cubin->arch()->str());
    if (first)
      precompiled = archs;
    else
      std::erase_if(precompiled, [&](const std::string &arch) { return !archs.count(arch); });
    first = false;
  }

  return ordered_json{
      {"engine", path},
      {"schema", std::to_string(p.schema_major()) + "." + std::to_string(p.schema_minor())},
      {"producer", p.producer() ? p.producer()->str() : ""},
      {"model",
       {{"architecture", model.architecture()->str()},
        {"family", model.family()->str()},
        {"layers", model.num_layers()},
        {"hidden_size", model.hidden_size()},
        {"num_heads", model.num_heads()},
        {"num_kv_heads", model.num_kv_heads()},
        {"head_dim", model.head_dim()},
        {"vocab_size", model.vocab_size()},
        {"dtype", plan::dtypeName(model.dtype())},
        {"max_seq_len", model.max_seq_len()},
        {"bos_token_id", model.bos_token_id()},
        {"eos_token_ids", eos}}},
      {"parallel", {{"tp", p.parallel()->tp()}, {"pp", p.parallel()->pp()}, {"dp", p.parallel()->dp()}}},
      {"parameters",
       {{"count", paramCount},
        {"bytes", paramBytes},
        {"checkpoint_tensors", sourceTensors.size()},
        {"fused_weights", rank.parameters()->size()}}},
      {"kernel_modules", p.kernels()->size()},
      {"precompiled_for", precompiled},
      {"kernel_launches", kernels},
      {"steps", rank.steps()->size()},
      {"per_layer_max", layerMax},
      {"kv_cache",
       {{"bytes_per_token", kvBytesPerToken},
        {"page_size", kv.page_size()},
        {"bytes_per_page", kvBytesPerToken * kv.page_size()}}},
      {"workspace",
       {{"bytes_per_token", rank.workspace_bytes_per_token()},
        {"bytes_per_seq", rank.workspace_bytes_per_seq()},
        {"max_tokens_per_forward", p.max_tokens_per_forward()},
        {"max_seqs_per_forward", p.max_seqs_per_forward()},
        {"bytes", workspace}}},
  };
}

void printText(const ordered_json &s, std::ostream &out) {
  const auto &m = s["model"];
  const auto &params = s["parameters"];
  const auto &layer = s["per_layer_max"];
  const auto &kv = s["kv_cache"];
  const auto &ws = s["workspace"];
  out << "engine:      " << s["engine"].get<std::string>() << " (plan schema "
      << s["schema"].get<std::string>() << ", " << s["producer"].get<std::string>() << ")\n";
  out << "model:       " << m["architecture"].get<std::string>() << ", " << m["layers"].get<int64_t>()
      << " layers, hidden " << m["hidden_size"].get<int64_t>() << ", heads "
      << m["num_heads"].get<int64_t>() << " (kv " << m["num_kv_heads"].get<int64_t>() << ") x "
      << m["head_dim"].get<int64_t>() << ", vocab " << m["vocab_size"].get<int64_t>() << ", "
      << m["dtype"].get<std::string>() << ", max seq len " << m["max_seq_len"].get<int64_t>() << "\n";
  out << "parameters:  " << withCommas(params["count"].get<int64_t>()) << " ("
      << bytesText(params["bytes"].get<double>()) << ") from "
      << params["checkpoint_tensors"].get<int64_t>() << " checkpoint tensors in "
      << params["fused_weights"].get<int64_t>() << " weights\n";
  out << "per layer:   at most " << layer["kernel"].get<int>() << " kernel launches + "
      << layer["gemm"].get<int>() << " GEMMs + " << layer["attention"].get<int>()
      << " attention\n";
  out << "kernels:     " << s["kernel_modules"].get<int>() << " modules";
  for (const auto &arch : s["precompiled_for"])
    out << (arch == s["precompiled_for"].front() ? " (precompiled for " : ", ") << arch.get<std::string>();
  if (!s["precompiled_for"].empty())
    out << ")";
  out << ";";
  for (const auto &[name, uses] : s["kernel_launches"].items())
    out << " " << name << " x" << uses.get<int>();
  out << "\n";
  out << "KV cache:    " << bytesText(kv["bytes_per_token"].get<double>()) << " per token ("
      << withCommas(kv["bytes_per_token"].get<int64_t>()) << " B), pages of "
      << kv["page_size"].get<int64_t>() << " tokens = " << bytesText(kv["bytes_per_page"].get<double>())
      << "\n";
  out << "workspace:   " << withCommas(ws["bytes_per_token"].get<int64_t>()) << " B/token + "
      << withCommas(ws["bytes_per_seq"].get<int64_t>()) << " B/seq = "
      << bytesText(ws["bytes"].get<double>()) << " at " << ws["max_tokens_per_forward"].get<int64_t>()
      << " tokens, " << ws["max_seqs_per_forward"].get<int64_t>() << " seqs per forward\n";
}

} // namespace

void inspectEngine(const std::string &path, bool json, std::ostream &out) {
  plan::PlanFile file = plan::PlanFile::load(path);
  ordered_json summary = summarize(file, path);
  if (json)
    out << summary.dump(2) << "\n";
  else
    printText(summary, out);
}

} // namespace llmc
