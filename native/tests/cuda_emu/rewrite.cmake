# rewrite.cmake: turns a CUDA source into C++ for the kernel emulator (emu.h):
#   name<<<grid, block, smem, stream>>>(args)  ->
#   ::byol_emu::Launch("name", grid, block, smem, stream).kernel(name)(args)
# and puts prelude.h first. A #line keeps compiler messages on the original file's lines.
# Usage: cmake -DIN=kernels/x.cu -DOUT=build/x.cc -P rewrite.cmake
file(READ "${IN}" text)
string(REGEX REPLACE
  "([A-Za-z_][A-Za-z0-9_]*(<[A-Za-z0-9_, :]*>)?)<<<(([^>]|>[^>]|>>[^>])*)>>>\\("
  "::byol_emu::Launch(\"\\1\", \\3).kernel(\\1)("
  text "${text}")
if(text MATCHES "<<<")
  message(FATAL_ERROR "rewrite.cmake: ${IN} holds a launch (<<<) that the pattern did not rewrite")
endif()
set(header "// Generated from ${IN} by native/tests/cuda_emu/rewrite.cmake: do not edit.\n#include \"prelude.h\"\n#line 1 \"${IN}\"\n")
# Rewrites only when the text changes, so an unchanged kernel file is not recompiled.
set(content "${header}${text}")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL content)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${content}")
