// `llmc inspect ENGINE_DIR`: a readable summary of a plan.
#pragma once

#include <iosfwd>
#include <string>

namespace llmc {

/// Prints the summary of the engine at `path` as text or JSON. Throws
/// plan::PlanError for an unreadable plan.
void inspectEngine(const std::string &path, bool json, std::ostream &out);

} // namespace llmc
