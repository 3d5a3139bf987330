# llmc_embed_files(OUTPUT COMMENT FILE...): a build rule writing OUTPUT, one
# `{"name", R"(text)"},` initializer per file (cmake/EmbedFiles.cmake), so C++
# can hold the text of CUDA sources that NVRTC compiles at run time.
function(llmc_embed_files output comment)
  string(REPLACE ";" "|" files "${ARGN}")
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${output} "-DFILES=${files}" -P ${PROJECT_SOURCE_DIR}/cmake/EmbedFiles.cmake
    DEPENDS ${ARGN} ${PROJECT_SOURCE_DIR}/cmake/EmbedFiles.cmake
    COMMENT "${comment}"
    VERBATIM
  )
endfunction()
