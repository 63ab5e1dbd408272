# Finds FFTW 3 in single and double precision (Debian: libfftw3-dev, which ships pkg-config
# files but no CMake package) and defines the imported targets
#   FFTW3::fftw3f  (float, libfftw3f)  and  FFTW3::fftw3  (double, libfftw3).
# Installed beside ssmqConfig.cmake, so that find_package(ssmq) finds FFTW the same way.
include(FindPackageHandleStandardArgs)
find_path(FFTW3_INCLUDE_DIR fftw3.h)
find_library(FFTW3_FLOAT_LIBRARY fftw3f)
find_library(FFTW3_DOUBLE_LIBRARY fftw3)
find_package_handle_standard_args(FFTW3
  REQUIRED_VARS FFTW3_INCLUDE_DIR FFTW3_FLOAT_LIBRARY FFTW3_DOUBLE_LIBRARY
  REASON_FAILURE_MESSAGE "install FFTW 3 (Debian: apt-get install libfftw3-dev)")
mark_as_advanced(FFTW3_INCLUDE_DIR FFTW3_FLOAT_LIBRARY FFTW3_DOUBLE_LIBRARY)
if(FFTW3_FOUND)
  foreach(lib IN ITEMS fftw3f fftw3)
    if(lib STREQUAL "fftw3f")
      set(location ${FFTW3_FLOAT_LIBRARY})
    else()
      set(location ${FFTW3_DOUBLE_LIBRARY})
    endif()
    if(NOT TARGET FFTW3::${lib})
      add_library(FFTW3::${lib} UNKNOWN IMPORTED)
      set_target_properties(FFTW3::${lib} PROPERTIES
        IMPORTED_LOCATION "${location}"
        INTERFACE_INCLUDE_DIRECTORIES "${FFTW3_INCLUDE_DIR}")
    endif()
  endforeach()
endif()
