# Writes OUTPUT: one `{"file name", R"(text)"},` initializer per file in FILES,
# so C++ can embed kernel sources. Run as: cmake -DOUTPUT=.. -DFILES="a|b" -P EmbedFiles.cmake
set(content "// Generated from kernels/ by cmake/EmbedFiles.cmake. Do not edit.\n")
string(REPLACE "|" ";" FILES "${FILES}")
foreach(file IN LISTS FILES)
  get_filename_component(name "${file}" NAME)
  file(READ "${file}" text)
  string(APPEND content "{\"${name}\", R\"llmc_embed(${text})llmc_embed\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "${content}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUTPUT}.tmp" "${OUTPUT}")
