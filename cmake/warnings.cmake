# Warnings for our own targets. LibTorch's headers trip -Wc++20-extensions under C++17
# (bit-field initializers in c10), which is not ours to fix.
function(glmi_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" OR CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} PRIVATE -Wno-c++20-extensions)
  endif()
  if(GLMI_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
