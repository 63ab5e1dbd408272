# Builds the consumer project in tests/downstream/consumer against ssmq, either through the
# installed package (MODE=install: cmake --install, then find_package(ssmq CONFIG REQUIRED))
# or through add_subdirectory (MODE=subdirectory), and runs it.
cmake_minimum_required(VERSION 3.21)
foreach(var MODE SSMQ_SOURCE WORK CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake needs -D${var}=...")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
set(consumer ${SSMQ_SOURCE}/tests/downstream/consumer)
if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} -S ${SSMQ_SOURCE} -B ${WORK}/ssmq-build -DCMAKE_CXX_COMPILER=${CXX}
      -DCMAKE_INSTALL_PREFIX=${WORK}/prefix -DSSMQ_BUILD_TESTS=OFF
      -DSSMQ_BUILD_BENCHMARKS=OFF -DSSMQ_BUILD_EXAMPLES=OFF)
  run(${CMAKE_COMMAND} --install ${WORK}/ssmq-build)
  run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK}/consumer-build -DCMAKE_CXX_COMPILER=${CXX}
      -DCMAKE_PREFIX_PATH=${WORK}/prefix)
elseif(MODE STREQUAL "subdirectory")
  run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK}/consumer-build -DCMAKE_CXX_COMPILER=${CXX}
      -DSSMQ_SUBDIRECTORY=${SSMQ_SOURCE})
else()
  message(FATAL_ERROR "MODE must be install or subdirectory")
endif()
run(${CMAKE_COMMAND} --build ${WORK}/consumer-build)
run(${WORK}/consumer-build/consumer)
message("${last_output}")
