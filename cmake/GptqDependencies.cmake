# Finds libtorch (from PyPI's torch wheel or an official archive), CLI11,
# nlohmann_json, spdlog, protobuf + gRPC and, for the tests, GoogleTest.

# The layer-solve worker's gRPC transport (src/rpc/transport). Found before
# Torch: TorchConfig otherwise aliases protobuf::libprotobuf to an empty target.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)

# The wheel links kineto (the profiler) statically into libtorch_cpu, yet its
# TorchConfig looks for a separate libkineto and warns when there is none;
# naming libtorch_cpu (already in TORCH_LIBRARIES) keeps the configure quiet.
# CMP0104 OLD: enabling CUDA inside TorchConfig would otherwise define
# CMAKE_CUDA_ARCHITECTURES, which torch's cuda.cmake warns about and ignores
# (TORCH_CUDA_ARCH_LIST decides; our kernels follow it below).
if(NOT DEFINED kineto_LIBRARY)
  find_library(kineto_LIBRARY torch_cpu PATHS ${CMAKE_PREFIX_PATH}/../../lib NO_DEFAULT_PATH)
endif()
cmake_policy(PUSH)
cmake_policy(SET CMP0104 OLD)
find_package(Torch REQUIRED)
cmake_policy(POP)
message(STATUS "libtorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")

# torch/include ships fmt 12; spdlog must format through it (Debian's fmt 9
# and spdlog 1.10 do not compile against it).
find_path(GPTQ_SPDLOG_INCLUDE spdlog/spdlog.h
  HINTS ${spdlog_DIR}/../include
  REQUIRED)
add_library(gptq_spdlog INTERFACE)
target_include_directories(gptq_spdlog SYSTEM INTERFACE ${GPTQ_SPDLOG_INCLUDE})
target_compile_definitions(gptq_spdlog INTERFACE SPDLOG_HEADER_ONLY SPDLOG_FMT_EXTERNAL FMT_HEADER_ONLY)
target_link_libraries(gptq_spdlog INTERFACE ${TORCH_LIBRARIES})

find_package(nlohmann_json 3.9 REQUIRED)
find_package(CLI11 REQUIRED)

find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

find_package(Threads REQUIRED)

# ATen's at::parallel_for is a header template: under libtorch's OpenMP
# backend a translation unit compiled without -fopenmp runs each of its
# parallel loops on one thread. Our sources are compiled with -fopenmp and
# link the OpenMP runtime libtorch itself loads (the wheel's torch/lib/
# libgomp.so.1), never a second one: GCC's own libgomp would put two
# directories holding a libgomp.so.1 on the run path (CMake warns it cannot
# order them safely) and two OpenMP runtimes, each with its own thread pool,
# could end up in one process. gptq_openmp carries the flag and the library.
add_library(gptq_openmp INTERFACE)
target_compile_options(gptq_openmp INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fopenmp>)
find_library(GPTQ_TORCH_OPENMP NAMES libgomp.so.1 gomp PATHS ${TORCH_INSTALL_PREFIX}/lib NO_DEFAULT_PATH)
if(GPTQ_TORCH_OPENMP)
  target_link_libraries(gptq_openmp INTERFACE ${GPTQ_TORCH_OPENMP})
else()
  # An official libtorch archive without a bundled runtime: the compiler's.
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  target_link_libraries(gptq_openmp INTERFACE OpenMP::OpenMP_CXX)
endif()
message(STATUS "OpenMP runtime: ${GPTQ_TORCH_OPENMP}")

# libtorch_cuda.so wants the wheel's own NCCL/cuBLAS, not the CUDA toolkit's;
# the linker needs to see them (at run time libtorch's RPATH finds them).
set(GPTQ_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(GPTQ_TORCH_HAS_CUDA ON)
  get_filename_component(_torch_lib_dir "${TORCH_INSTALL_PREFIX}/lib" ABSOLUTE)
  file(GLOB _nvidia_lib_dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib" "${TORCH_INSTALL_PREFIX}/../nvidia/cu*/lib")
  foreach(_dir IN LISTS _nvidia_lib_dirs)
    string(APPEND CMAKE_EXE_LINKER_FLAGS " -Wl,-rpath-link,${_dir}")
  endforeach()
endif()
message(STATUS "libtorch CUDA support: ${GPTQ_TORCH_HAS_CUDA}")

if(GPTQ_TORCH_HAS_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Our own kernels build for the architectures libtorch was asked for
    # ("9.0" -> 90); CMake 3.25 has no CUDA20 dialect, so -std=c++20 is passed
    # per source in GptqModule.cmake.
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      string(REPLACE "." "" _archs "${TORCH_CUDA_ARCH_LIST}")
      string(REPLACE "+PTX" "" _archs "${_archs}")
      string(REPLACE " " ";" _archs "${_archs}")
      set(CMAKE_CUDA_ARCHITECTURES ${_archs})
    endif()
    enable_language(CUDA)
    # torch's cuda.cmake sets CMAKE_CUDA_STANDARD 20; CMake 3.25 knows nvcc
    # flags only up to C++17, so teach it the C++20 one (nvcc >= 12 has it).
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(GPTQ_WITH_CUDA_KERNELS ON)
  endif()
endif()
