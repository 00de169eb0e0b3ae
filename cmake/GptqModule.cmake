# gptq_add_module(<name> DEPS <targets...>)
# Builds src/<name>/*.cpp (and *.cu when CUDA kernels are on) into the static
# library gptq_<name>, with include/ public. Modules glob their sources so a new
# file needs no edit here.
function(gptq_add_module name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB _sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cpp)
  if(GPTQ_WITH_CUDA_KERNELS)
    file(GLOB _cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cu)
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
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr>)
  if(GPTQ_WITH_CUDA_KERNELS)
    target_compile_definitions(gptq_${name} PUBLIC GPTQ_WITH_CUDA_KERNELS=1)
  endif()
endfunction()

# gptq_add_test_suite(<name> DEPS <targets...>)
# One GoogleTest executable per module from tests/<name>/*_test.cpp.
function(gptq_add_test_suite name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB _sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/${name}/*_test.cpp)
  if(NOT _sources)
    return()
  endif()
  add_executable(gptq_${name}_tests ${_sources})
  target_link_libraries(gptq_${name}_tests PRIVATE ${ARG_DEPS} gptq_testing GTest::gtest_main)
  target_include_directories(gptq_${name}_tests PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/src)
  gtest_discover_tests(gptq_${name}_tests
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    # A plain path, not $<TARGET_FILE:...>: the genex would make every suite
    # depend on the whole CLI and stop modules from building alone.
    PROPERTIES ENVIRONMENT "GPTQ_SHARED_DIR=${GPTQ_SHARED_DIR};GPTQ_BINARY=${PROJECT_BINARY_DIR}/gptq-quant;GPTQ_BUILD_DIR=${PROJECT_BINARY_DIR}"
    DISCOVERY_TIMEOUT 120)
endfunction()
