# Compiles one public header on its own (no include path at all: the public headers include each
# other by relative name) and fails if it does not compile or if anything outside the standard
# library is reachable from it. Run as:
#   cmake -DCXX=<compiler> -DHEADER=<path> -P check_public_header.cmake
get_filename_component(name ${HEADER} NAME_WE)
set(unit ${CMAKE_CURRENT_BINARY_DIR}/public_header_${name}.cpp)
file(WRITE ${unit} "#include \"${HEADER}\"\n")
execute_process(
  COMMAND ${CXX} -std=c++17 -fsyntax-only -Wall -Wextra -Werror -H ${unit}
  RESULT_VARIABLE rc ERROR_VARIABLE included OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${HEADER} does not compile on its own:\n${included}")
endif()
get_filename_component(public_dir ${HEADER} DIRECTORY)
string(REPLACE "\n" ";" lines "${included}")
set(count 0)
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^\\.+ (.+)$")
    continue()
  endif()
  set(path ${CMAKE_MATCH_1})
  math(EXPR count "${count} + 1")
  # The C++ standard library, the compiler's own headers, and the C library.
  if(path MATCHES "^/usr/include/c\\+\\+/" OR path MATCHES "^/usr/include/x86_64-linux-gnu/"
     OR path MATCHES "^/usr/include/aarch64-linux-gnu/" OR path MATCHES "^/usr/lib/gcc/"
     OR path MATCHES "^/usr/include/(bits|sys|gnu|asm|asm-generic|linux)/"
     OR path MATCHES "^/usr/include/[^/]+\\.h$")
    continue()
  endif()
  # The other public headers.
  get_filename_component(dir ${path} DIRECTORY)
  get_filename_component(dir ${dir} REALPATH)
  get_filename_component(expected ${public_dir} REALPATH)
  if(dir STREQUAL expected)
    continue()
  endif()
  message(FATAL_ERROR "${HEADER} reaches ${path}, which is neither the standard library nor a "
                      "public header of kvferry")
endforeach()
message(STATUS "${HEADER}: compiles alone; ${count} headers reached, all standard or public")
