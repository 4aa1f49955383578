# Finds every external dependency through its own CMake config or module, the same way on a
# developer machine (Debian packages + PyPI torch in .venv) and on the GPU machines
# (preinstalled torch in /opt/torch/.venv, NCCL from the nvidia-nccl-cu13 wheel).
find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
# LibTorch ships its own, newer fmt headers in its include dir, while spdlog was compiled
# against the system fmt. A directory holding only the system fmt is put ahead of LibTorch's
# (non-system -I beats -isystem), so every translation unit sees the fmt spdlog links with.
find_package(fmt QUIET)
set(TANDEM_FMT_SHIM_DIR "")
if(TARGET fmt::fmt)
  get_target_property(_tandem_fmt_dirs fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
  foreach(dir ${_tandem_fmt_dirs})
    if(EXISTS ${dir}/fmt/core.h AND NOT TANDEM_FMT_SHIM_DIR)
      set(TANDEM_FMT_SHIM_DIR ${CMAKE_BINARY_DIR}/fmt-shim)
      file(MAKE_DIRECTORY ${TANDEM_FMT_SHIM_DIR})
      file(CREATE_LINK ${dir}/fmt ${TANDEM_FMT_SHIM_DIR}/fmt SYMBOLIC)
    endif()
  endforeach()
endif()
find_package(yaml-cpp REQUIRED)
find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(Protobuf REQUIRED)
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
# nlohmann-json: every JSON file tandem reads or writes (schedules, timelines, traces, metrics,
# safetensors headers, config.json; runtime/json.h). Chosen because it is the well-kept,
# header-only JSON library that is packaged both here (Debian: nlohmann-json3-dev, which
# bootstrap.sh installs) and on the offline GPU machines; simdjson is not available there.
# 3.9 is the first release with ordered_json (writers keep their key order).
find_package(nlohmann_json 3.9 CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  find_path(NLOHMANN_JSON_INCLUDE_DIR nlohmann/json.hpp)
  if(NOT NLOHMANN_JSON_INCLUDE_DIR)
    message(FATAL_ERROR "tandem: nlohmann/json.hpp (nlohmann-json 3.9 or newer) not found: install the Debian "
                        "package nlohmann-json3-dev (./bootstrap.sh does) or pass -DNLOHMANN_JSON_INCLUDE_DIR=DIR")
  endif()
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  target_include_directories(nlohmann_json::nlohmann_json INTERFACE ${NLOHMANN_JSON_INCLUDE_DIR})
endif()
if(TANDEM_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(TANDEM_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(NOT benchmark_FOUND)
    message(STATUS "tandem: Google Benchmark not found; benchmarks are not built")
    set(TANDEM_BUILD_BENCH OFF)
  endif()
endif()

# yaml-cpp 0.7 (Debian 12) exports `yaml-cpp`, 0.8 exports `yaml-cpp::yaml-cpp`.
if(TARGET yaml-cpp::yaml-cpp)
  set(TANDEM_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(TANDEM_YAML_TARGET yaml-cpp)
endif()

# --- Python interpreter that holds torch (project .venv first, then the system one) ----------
if(NOT TANDEM_PYTHON)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python)
    set(TANDEM_PYTHON ${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python)
  else()
    find_program(TANDEM_PYTHON NAMES python3 python REQUIRED)
  endif()
endif()
set(TANDEM_PYTHON ${TANDEM_PYTHON} CACHE FILEPATH "Python interpreter whose torch package provides LibTorch")

set(TANDEM_HAVE_CUDA OFF)
if(TANDEM_WITH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # LibTorch's CMake adds the -gencode flags from TORCH_CUDA_ARCH_LIST (default 9.0a: Hopper)
    # to every CUDA target and ignores CMAKE_CUDA_ARCHITECTURES, so CMake must add none itself.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES OFF)
    endif()
    enable_language(CUDA)
    # Kernels are C++17: CMake 3.25 does not know nvcc 13's C++20 flag, and LibTorch's CMake would
    # otherwise copy CMAKE_CXX_STANDARD (20) into CMAKE_CUDA_STANDARD.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # tandem's own kernels: Hopper (sm_90a: wgmma, TMA) unless told otherwise.
    set(TANDEM_CUDA_GENCODE "-gencode=arch=compute_90a,code=sm_90a" CACHE STRING "nvcc -gencode flags for tandem kernels")
    find_package(CUDAToolkit REQUIRED)
    set(TANDEM_HAVE_CUDA ON)
  else()
    message(STATUS "tandem: no CUDA compiler found; CUDA kernels and the NCCL backend are off")
  endif()
endif()

if(TANDEM_WITH_TORCH)
  execute_process(
    COMMAND ${TANDEM_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__)"
    OUTPUT_VARIABLE _tandem_torch_info OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _tandem_torch_rc ERROR_VARIABLE _tandem_torch_err)
  if(NOT _tandem_torch_rc EQUAL 0)
    message(FATAL_ERROR "tandem: ${TANDEM_PYTHON} cannot import torch (${_tandem_torch_err}). "
                        "Run ./bootstrap.sh, which installs torch==2.11.0 into .venv, or pass -DTANDEM_PYTHON=...")
  endif()
  string(REPLACE "\n" ";" _tandem_torch_info "${_tandem_torch_info}")
  list(GET _tandem_torch_info 0 _tandem_torch_prefix)
  list(GET _tandem_torch_info 1 TANDEM_TORCH_VERSION)
  list(APPEND CMAKE_PREFIX_PATH ${_tandem_torch_prefix})
  if(TANDEM_HAVE_CUDA AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(ENV{TORCH_CUDA_ARCH_LIST} "9.0a")
  endif()
  find_package(Torch REQUIRED)
  message(STATUS "tandem: LibTorch ${TANDEM_TORCH_VERSION} from ${_tandem_torch_prefix}")
  # Torch's imported targets carry its own flags; keep only the ABI definition for our code.
  add_library(tandem_torch INTERFACE)
  target_link_libraries(tandem_torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(tandem_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})

  # NCCL: the same library libtorch_cuda loads (nvidia-nccl-cu13 wheel), else the toolkit's.
  if(TANDEM_HAVE_CUDA)
    execute_process(
      COMMAND ${TANDEM_PYTHON} -c "import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])"
      OUTPUT_VARIABLE _tandem_nccl_root OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _tandem_nccl_rc ERROR_QUIET)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_tandem_nccl_root}/include ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR HINTS ${_tandem_nccl_root}/lib ${CUDAToolkit_LIBRARY_DIR})
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(tandem_nccl INTERFACE)
      target_include_directories(tandem_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(tandem_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
      message(STATUS "tandem: NCCL ${NCCL_LIBRARY}")
    else()
      message(STATUS "tandem: NCCL not found; the NCCL backend is off")
      set(TANDEM_HAVE_CUDA OFF)
    endif()
  endif()
endif()
message(STATUS "tandem: CUDA parts ${TANDEM_HAVE_CUDA}")
