# cmake -DINPUT=<layercache.yaml> -DOUTPUT=<default_config.cpp> -P embed_yaml.cmake
#
# Writes a C++ source defining layercache::config::default_yaml() as a raw string literal. The
# delimiter is chosen so that its closing sequence does not occur in the file.
cmake_minimum_required(VERSION 3.25)

if(NOT INPUT OR NOT OUTPUT)
  message(FATAL_ERROR "embed_yaml.cmake: INPUT and OUTPUT are required")
endif()
file(READ "${INPUT}" content)

set(n 0)
while(TRUE)
  set(delimiter "yaml${n}")
  string(FIND "${content}" ")${delimiter}\"" found)
  if(found EQUAL -1)
    break()
  endif()
  math(EXPR n "${n} + 1")
endwhile()

set(generated "// Generated from ${INPUT} by embed_yaml.cmake; do not edit.
#include \"config/config.hpp\"

namespace layercache::config {

std::string_view default_yaml() {
  static constexpr std::string_view text = R\"${delimiter}(${content})${delimiter}\";
  return text;
}

}  // namespace layercache::config
")

# Rewrite only on change so dependants are not rebuilt needlessly.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" previous)
  if(previous STREQUAL generated)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${generated}")
