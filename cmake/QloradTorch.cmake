# Finds LibTorch from the torch==2.11.0 PyPI wheel (scripts/deps.sh installs it into a venv).
# Pass -DQLORAD_PYTHON=/path/to/python, or -DTorch_DIR=..., or set CMAKE_PREFIX_PATH yourself.
if(NOT Torch_DIR)
  if(NOT QLORAD_PYTHON)
    if(DEFINED ENV{QLORAD_VENV})
      set(QLORAD_PYTHON "$ENV{QLORAD_VENV}/bin/python")
    else()
      set(QLORAD_PYTHON "$ENV{HOME}/.cache/qlorad/venv/bin/python")
    endif()
    if(NOT EXISTS ${QLORAD_PYTHON})
      find_program(QLORAD_PYTHON python3 REQUIRED)
    endif()
  endif()
  execute_process(
    COMMAND ${QLORAD_PYTHON} -c "import torch, sys; sys.stdout.write(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _qlorad_torch_prefix RESULT_VARIABLE _qlorad_rc ERROR_QUIET)
  if(NOT _qlorad_rc EQUAL 0)
    message(FATAL_ERROR "qlorad: cannot import torch with ${QLORAD_PYTHON}; run scripts/deps.sh "
                        "or pass -DQLORAD_PYTHON=<python with torch==2.11.0>")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_qlorad_torch_prefix})
endif()

# TorchConfig probes CUDA itself; tell it our architectures so it does not add its own list.
string(REPLACE ";" " " _qlorad_arch_list "${QLORAD_CUDA_ARCHS}")
string(REGEX REPLACE "([0-9])([0-9])" "\\1.\\2" _qlorad_arch_list "${_qlorad_arch_list}")
set(TORCH_CUDA_ARCH_LIST "${_qlorad_arch_list}")
find_package(Torch 2.11 REQUIRED)

# qlorad_torch_target(target): links LibTorch with its headers as SYSTEM includes (our -Werror
# must not trip on torch's own warnings) and shares one precompiled torch header, since every
# torch translation unit otherwise spends ~30 s parsing it.
add_library(qlorad_torch_pch STATIC ${CMAKE_CURRENT_LIST_DIR}/empty.cc)
target_include_directories(qlorad_torch_pch SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
target_link_libraries(qlorad_torch_pch PUBLIC ${TORCH_LIBRARIES})
target_compile_options(qlorad_torch_pch PUBLIC ${TORCH_CXX_FLAGS})
target_precompile_headers(qlorad_torch_pch PRIVATE <torch/torch.h>)
qlorad_warnings(qlorad_torch_pch)

function(qlorad_torch_target target)
  target_link_libraries(${target} PUBLIC qlorad_torch_pch)
  target_precompile_headers(${target} REUSE_FROM qlorad_torch_pch)
endfunction()
