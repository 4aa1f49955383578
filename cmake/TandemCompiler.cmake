# Compiler settings shared by every target: warnings, ccache, and the helper that declares a
# tandem library target (one per folder).
find_program(TANDEM_CCACHE ccache)
if(TANDEM_CCACHE)
  # base_dir makes cached objects reusable across checkouts (a CI clone hits what a developer
  # built); the sloppiness lets ccache cache translation units that use precompiled headers.
  set(_tandem_launcher ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime ${TANDEM_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${_tandem_launcher})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_tandem_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_tandem_launcher})
endif()

# __FILE__ relative to the source root: error messages read "runtime/error.cpp:12" wherever the
# checkout lives, and ccache hits across checkouts.
# With CCACHE_BASEDIR (below) ccache hands the compiler paths relative to the build directory,
# so the relative spelling of the source root is mapped away too.
file(RELATIVE_PATH _tandem_source_from_build ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
string(REGEX REPLACE "/+$" "" _tandem_source_from_build "${_tandem_source_from_build}")
# ccache leaves prefix maps out of its hash, so the relative spelling also goes into a define:
# objects built with a different build-to-source path (hence a different __FILE__) never mix.
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fmacro-prefix-map=${CMAKE_SOURCE_DIR}/=>
                    $<$<COMPILE_LANGUAGE:CXX>:-fmacro-prefix-map=${_tandem_source_from_build}/=>)
add_compile_definitions($<$<COMPILE_LANGUAGE:CXX>:TANDEM_SOURCE_FROM_BUILD="${_tandem_source_from_build}">)

add_library(tandem_warnings INTERFACE)
target_compile_options(tandem_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers>)

# tandem_add_library(NAME SOURCES ... [DEPS ...] [PRIVATE_DEPS ...] [PCH header ...])
function(tandem_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS;PCH" ${ARGN})
  if(NOT ARG_SOURCES)
    # A folder whose first sources are still being written: keep the target (others link it).
    set(placeholder ${CMAKE_BINARY_DIR}/generated/${name}_placeholder.cpp)
    file(WRITE ${placeholder} "// ${name} has no sources yet\n")
    set(ARG_SOURCES ${placeholder})
    set(ARG_PCH "")
  endif()
  add_library(${name} ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${TANDEM_SOURCE_ROOT}>
                                            $<BUILD_INTERFACE:${CMAKE_BINARY_DIR}/generated>)
  if(TANDEM_FMT_SHIM_DIR)
    target_include_directories(${name} BEFORE PUBLIC $<BUILD_INTERFACE:${TANDEM_FMT_SHIM_DIR}>)
  endif()
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE tandem_warnings ${ARG_PRIVATE_DEPS})
  if(TANDEM_USE_PCH AND ARG_PCH)
    target_precompile_headers(${name} PRIVATE ${ARG_PCH})
  endif()
endfunction()

# tandem_add_kernel_library(NAME DIR): a static library of the torch-free CUDA kernels DIR/*.cu,
# compiled for tandem's GPU target (${TANDEM_CUDA_GENCODE}); call only when TANDEM_HAVE_CUDA.
function(tandem_add_kernel_library name dir)
  file(GLOB sources CONFIGURE_DEPENDS ${dir}/*.cu)
  add_library(${name} STATIC ${sources})
  target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${TANDEM_SOURCE_ROOT}>)
  target_link_libraries(${name} PUBLIC CUDA::cudart)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${TANDEM_CUDA_GENCODE}>)
endfunction()
