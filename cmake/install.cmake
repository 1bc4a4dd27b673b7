# Installation and the exported CMake package:
#
#   cmake --install build --prefix /opt/glmimage
#   # consumer:
#   find_package(glmimage 0.1 REQUIRED)     # with CMAKE_PREFIX_PATH="/opt/glmimage;<torch cmake dir>"
#   target_link_libraries(app PRIVATE glmimage::glmimage)
#
# Installed: lib/libglmimage.so*, include/glmimage/{glmimage,options,errors}.h (the public API
# only; src/ headers name LibTorch types and are not part of it), bin/glmimage (the CLI, when
# built), lib/cmake/glmimage/ (config, version, exported targets).
#
# libglmimage is a shared library so that its private dependencies (the static torch-free
# glmimage_torchfree, nlohmann_json, PCRE2) are linked into it and never reach a consumer's link
# line; the only dependency the package re-finds is Torch, which the target links publicly.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(GLMI_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/glmimage")

get_target_property(_glmi_type glmimage TYPE)
if(NOT _glmi_type STREQUAL "SHARED_LIBRARY")
  # A static libglmimage would drag glmimage_torchfree and its find_package dependencies into
  # the export; the package below is written for the shared library only.
  message(FATAL_ERROR "cmake/install.cmake expects glmimage to be a SHARED library, it is ${_glmi_type}")
endif()

# The SONAME follows the package's compatibility promise (SameMajorVersion below).
set_target_properties(glmimage PROPERTIES
  VERSION "${PROJECT_VERSION}"
  SOVERSION "${PROJECT_VERSION_MAJOR}")

# RPATHs of the installed files: $ORIGIN-relative for our own library, so the prefix can
# move, plus LibTorch's lib directory, so the library and the CLI find LibTorch wherever it is
# (pip wheel in site-packages, an unpacked libtorch zip) without LD_LIBRARY_PATH. Named
# explicitly rather than INSTALL_RPATH_USE_LINK_PATH, which also picks up the nonexistent MKL
# directories (/lib/intel64, ...) that Torch's targets carry.
if(DEFINED TORCH_INSTALL_PREFIX)
  set(_glmi_torch_rpath "${TORCH_INSTALL_PREFIX}/lib")
  set(_glmi_use_link_path FALSE)
else()
  set(_glmi_torch_rpath "")
  set(_glmi_use_link_path TRUE)
endif()
file(RELATIVE_PATH _glmi_bin_to_lib
  "/${CMAKE_INSTALL_BINDIR}" "/${CMAKE_INSTALL_LIBDIR}")
set_target_properties(glmimage PROPERTIES
  INSTALL_RPATH "$ORIGIN;${_glmi_torch_rpath}"
  INSTALL_RPATH_USE_LINK_PATH ${_glmi_use_link_path})
if(TARGET glmimage_cli)
  set_target_properties(glmimage_cli PROPERTIES
    INSTALL_RPATH "$ORIGIN/${_glmi_bin_to_lib};${_glmi_torch_rpath}"
    INSTALL_RPATH_USE_LINK_PATH ${_glmi_use_link_path})
endif()

# Only the public headers; the list is explicit so a new internal header never ships by accident.
install(FILES
  include/glmimage/glmimage.h
  include/glmimage/options.h
  include/glmimage/errors.h
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/glmimage")

# The CLI (if built) is installed by the same call but is not exported: an executable target
# is of no use to find_package consumers.
install(TARGETS glmimage
  EXPORT glmimageTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
if(TARGET glmimage_cli)
  install(TARGETS glmimage_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
endif()

install(EXPORT glmimageTargets
  NAMESPACE glmimage::
  FILE glmimageTargets.cmake
  DESTINATION "${GLMI_INSTALL_CMAKEDIR}")

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/glmimageConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/glmimageConfig.cmake"
  INSTALL_DESTINATION "${GLMI_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${CMAKE_CURRENT_BINARY_DIR}/glmimageConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/glmimageConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/glmimageConfigVersion.cmake"
  DESTINATION "${GLMI_INSTALL_CMAKEDIR}")

unset(_glmi_type)
unset(_glmi_bin_to_lib)
unset(_glmi_torch_rpath)
unset(_glmi_use_link_path)
