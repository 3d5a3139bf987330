# Writes OUTPUT: the text of INPUT as one C++ raw string literal.
file(READ "${INPUT}" text)
file(WRITE "${OUTPUT}.tmp" "R\"llmc_embed(${text})llmc_embed\"\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUTPUT}.tmp" "${OUTPUT}")
