# rewrite.cmake: turns a CUDA source into C++ for the kernel emulator (emu.h):
#   name<<<grid, block, smem, stream>>>(args)  ->
#   ::byol_emu::Launch("name", grid, block, smem, stream).kernel(name)(args)
#   __shared__ T a[N], b[M][K];  ->  static char byol_emu_site_a; T (&a)[N] =
#     ::byol_emu::block_shared<T[N]>(&byol_emu_site_a); (the same for b), on the same line
# and puts prelude.h first. A #line keeps compiler messages on the original file's lines.
# Shared arrays become references into the running block's shared memory (emu.cc hands each
# declaration site its own slot, fresh for every block), so a read before any write in that
# block sees NaN bytes, not the last block's values. Only statically sized arrays are
# rewritten; anything else named __shared__ stops the build.
# Usage: cmake -DIN=kernels/x.cu -DOUT=build/x.cc [-DPRELUDE=header] -P rewrite.cmake
# PRELUDE (default prelude.h) is the header the output includes first: the simulated plugin
# (../cuda_sim) gives its own, which keeps the namespace byol::cuda.
if(NOT PRELUDE)
  set(PRELUDE prelude.h)
endif()
file(READ "${IN}" text)
string(REGEX REPLACE
  "([A-Za-z_][A-Za-z0-9_]*(<[A-Za-z0-9_, :]*>)?)<<<(([^>]|>[^>]|>>[^>])*)>>>\\("
  "::byol_emu::Launch(\"\\1\", \\3).kernel(\\1)("
  text "${text}")
if(text MATCHES "<<<")
  message(FATAL_ERROR "rewrite.cmake: ${IN} holds a launch (<<<) that the pattern did not rewrite")
endif()

# One declaration at a time, left to right (CMake lists would split at the `;` and `[`).
set(done "")
set(rest "${text}")
while(rest MATCHES "__shared__[ \t]+([A-Za-z_][A-Za-z0-9_:]*)[ \t]+([^;]*);")
  set(whole "${CMAKE_MATCH_0}")
  set(type "${CMAKE_MATCH_1}")
  set(declarators "${CMAKE_MATCH_2}")
  string(FIND "${rest}" "${whole}" at)
  string(SUBSTRING "${rest}" 0 ${at} before)
  string(LENGTH "${whole}" length)
  math(EXPR after "${at} + ${length}")
  string(SUBSTRING "${rest}" ${after} -1 rest)
  set(replacement "")
  while(NOT declarators STREQUAL "")
    if(NOT declarators MATCHES "^[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*((\\[[^],;]+\\])+)[ \t]*(,|$)")
      message(FATAL_ERROR "rewrite.cmake: ${IN}: cannot rewrite `${whole}`: the emulator takes __shared__ arrays "
                          "of constant size only (name[N]..., no initializer)")
    endif()
    set(name "${CMAKE_MATCH_1}")
    set(dims "${CMAKE_MATCH_2}")
    string(LENGTH "${CMAKE_MATCH_0}" used)
    string(SUBSTRING "${declarators}" ${used} -1 declarators)
    string(APPEND replacement "static char byol_emu_site_${name}; ${type} (&${name})${dims} = "
                              "::byol_emu::block_shared<${type}${dims}>(&byol_emu_site_${name}); ")
  endwhile()
  string(APPEND done "${before}${replacement}")
endwhile()
set(text "${done}${rest}")
if(text MATCHES "__shared__")
  message(FATAL_ERROR "rewrite.cmake: ${IN} names __shared__ in a form the emulator does not rewrite")
endif()
set(header "// Generated from ${IN} by native/tests/cuda_emu/rewrite.cmake: do not edit.\n#include \"${PRELUDE}\"\n#line 1 \"${IN}\"\n")
# Rewrites only when the text changes, so an unchanged kernel file is not recompiled.
set(content "${header}${text}")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL content)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${content}")
