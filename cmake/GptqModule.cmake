# Precompiled headers: parsing libtorch's ATen headers is most of a source
# file's compile time (12.8 of 18.7 s for solver/gptq.cpp; 5.2 s with the
# PCH), so every C++ target reuses one PCH of <ATen/ATen.h> built with
# gptq_core. Only ATen: adding nlohmann/json and spdlog made GCC generate far
# more code per file (17 s for the same file). The PCH and its users share the
# flags that matter (libtorch's definitions, -fopenmp, C++20); a user whose
# flags differ only loses the speed-up (GCC ignores an invalid PCH, and
# -Winvalid-pch says so). CUDA sources never take it. GPTQ_PCH=OFF turns it off.
option(GPTQ_PCH "Compile with a precompiled header of the libtorch headers" ON)
set(GPTQ_PCH_HEADERS <ATen/ATen.h>)

# Unity build: each target compiles its sources 8 to a translation unit, so
# the inline ATen, fmt and JSON code they all use is instantiated and
# optimised once per batch instead of once per file: the gptq-quant target
# from scratch on 2 cores, ccache off, 434 s -> 205 s (docs/benchmarks.md,
# "Build, demo and test-suite time"). It costs incremental rebuilds (one edit
# recompiles its batch), so a developer iterating on a few files may
# configure -DGPTQ_UNITY_BUILD=OFF. It requires that no two sources of a module define
# the same name in an anonymous namespace; shared helpers go in a header.
option(GPTQ_UNITY_BUILD "Compile each target's C++ sources in batches of 8" ON)

# GCC 12 at -O3 reports std::string concatenation and vector destruction
# inlined from libstdc++ as out-of-bounds or overlapping memcpy / delete of a
# non-heap pointer (GCC bugs 105651, 105329): noise in a build that is
# otherwise warning-free, so those are off for GCC 12 only (tests included).
set(GPTQ_GCC12_FALSE_POSITIVES "")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12
   AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  set(GPTQ_GCC12_FALSE_POSITIVES -Wno-stringop-overflow -Wno-free-nonheap-object -Wno-array-bounds -Wno-restrict)
endif()

# gptq_use_unity(<target>): GPTQ_UNITY_BUILD batches for <target>'s C++ sources.
# -Wsubobject-linkage is off there: in a batch, a class of one source holding
# a type from that source's anonymous namespace is reported as if the two were
# in different files, though the batch is one translation unit.
function(gptq_use_unity target)
  if(GPTQ_UNITY_BUILD)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 8)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-subobject-linkage>)
  endif()
endfunction()

# gptq_use_pch(<target>): the shared precompiled header for <target>'s C++ sources.
function(gptq_use_pch target)
  if(NOT GPTQ_PCH)
    return()
  endif()
  if(target STREQUAL "gptq_core")
    target_precompile_headers(gptq_core PRIVATE ${GPTQ_PCH_HEADERS})
  else()
    target_precompile_headers(${target} REUSE_FROM gptq_core)
  endif()
endfunction()

# gptq_add_module(<name> DEPS <targets...>)
# Builds src/<name>/*.cpp (and *.cu when CUDA kernels are on) into the static
# library gptq_<name>, with include/ public. Modules glob their sources so a new
# file needs no edit here.
function(gptq_add_module name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB _sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cpp)
  if(GPTQ_WITH_CUDA_KERNELS)
    file(GLOB _cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cu)
    set_source_files_properties(${_cuda_sources} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    list(APPEND _sources ${_cuda_sources})
  endif()
  if(NOT _sources)
    # A module with no sources yet still exists so dependents can link it.
    add_library(gptq_${name} INTERFACE)
    target_include_directories(gptq_${name} INTERFACE ${PROJECT_SOURCE_DIR}/include)
    target_link_libraries(gptq_${name} INTERFACE ${ARG_DEPS} ${TORCH_LIBRARIES})
    return()
  endif()
  add_library(gptq_${name} STATIC ${_sources})
  target_include_directories(gptq_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(gptq_${name} PUBLIC ${ARG_DEPS} ${TORCH_LIBRARIES})
  target_link_libraries(gptq_${name} PUBLIC gptq_openmp)
  target_compile_options(gptq_${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter ${GPTQ_GCC12_FALSE_POSITIVES}>
    $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr>)
  if(GPTQ_WITH_CUDA_KERNELS)
    target_compile_definitions(gptq_${name} PUBLIC GPTQ_WITH_CUDA_KERNELS=1)
  endif()
  gptq_use_pch(gptq_${name})
  gptq_use_unity(gptq_${name})
endfunction()

# gptq_add_test_suite(<name> DEPS <targets...>)
# One GoogleTest executable per module from tests/<name>/*_test.cpp, run as
# GPTQ_TEST_SHARDS CTest tests (unit.<name>.<k>ofN), each one shard of it.
set(GPTQ_TEST_SHARDS 2 CACHE STRING "GoogleTest shards (CTest tests) per unit-test binary")
# CTest runs tests side by side (scripts/test.sh: -j2 on 2 cores), each with
# OpenMP threads of its own. libgomp's default wait policy spins idle threads,
# so two oversubscribed tests burn each other's cores: measured on 2 cores,
# two conformance files side by side took 139 s and 118 s spinning, 86 s and
# 62 s with PASSIVE. Every test gets it (the tool's own default stays).
set(GPTQ_TEST_OPENMP_ENV "OMP_WAIT_POLICY=PASSIVE")

function(gptq_add_test_suite name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB _sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/${name}/*_test.cpp)
  if(NOT _sources)
    return()
  endif()
  add_executable(gptq_${name}_tests ${_sources})
  target_link_libraries(gptq_${name}_tests PRIVATE ${ARG_DEPS} gptq_testing GTest::gtest_main)
  target_include_directories(gptq_${name}_tests PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/src)
  # Not unity-built: test files are three or so per suite and each keeps its
  # own small helpers (tiny_config, max_diff) under the same names.
  gptq_use_pch(gptq_${name}_tests)
  target_compile_options(gptq_${name}_tests PRIVATE ${GPTQ_GCC12_FALSE_POSITIVES})
  # A few CTest tests per suite, each running one GoogleTest shard of the
  # binary, rather than one process per test case: every process loads
  # libtorch (about a second of CPU here), which for ~340 cases cost minutes
  # of the suite. --output-on-failure still shows which case failed, and
  # `ctest -R unit.calib` still selects a module's suite.
  foreach(_shard RANGE 1 ${GPTQ_TEST_SHARDS})
    math(EXPR _index "${_shard} - 1")
    add_test(NAME unit.${name}.${_shard}of${GPTQ_TEST_SHARDS} COMMAND gptq_${name}_tests --gtest_brief=1
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    # A plain path, not $<TARGET_FILE:...>: the genex would make every suite
    # depend on the whole CLI and stop modules from building alone.
    set_tests_properties(unit.${name}.${_shard}of${GPTQ_TEST_SHARDS} PROPERTIES ENVIRONMENT
      "${GPTQ_TEST_OPENMP_ENV};GTEST_TOTAL_SHARDS=${GPTQ_TEST_SHARDS};GTEST_SHARD_INDEX=${_index};GPTQ_SHARED_DIR=${GPTQ_SHARED_DIR};GPTQ_BINARY=${PROJECT_BINARY_DIR}/gptq-quant;GPTQ_BUILD_DIR=${PROJECT_BINARY_DIR}")
  endforeach()
endfunction()
