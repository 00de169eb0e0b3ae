# Compiles through ccache (Debian's `ccache`) when it is installed, so a fresh
# clone on a machine that built before recompiles only what changed. The
# cache is keyed on paths relative to the source tree (CCACHE_BASEDIR), so a
# second clone or worktree at another path hits the same entries; it lives in
# ccache's default directory (~/.cache/ccache). GPTQ_CCACHE=OFF turns it off.
option(GPTQ_CCACHE "Compile through ccache when it is installed" ON)
find_program(GPTQ_CCACHE_PROGRAM ccache)
if(GPTQ_CCACHE AND GPTQ_CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(_gptq_ccache ${CMAKE_COMMAND} -E env CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} CCACHE_NOHASHDIR=true
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime ${GPTQ_CCACHE_PROGRAM})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_gptq_ccache})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_gptq_ccache})
  message(STATUS "compiler cache: ${GPTQ_CCACHE_PROGRAM}")
endif()
