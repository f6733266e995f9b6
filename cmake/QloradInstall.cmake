# `cmake --install BUILD --prefix PREFIX` (make install PREFIX=...): the four programs into
# PREFIX/bin, the torch operator library into PREFIX/lib/qlorad, the systemd units and the
# Prometheus example into PREFIX/share/qlorad/deploy (qloractl's shell completion scripts are
# installed by client/cli/CMakeLists.txt, into PREFIX/share/{bash-completion,zsh}).
#
# LibTorch comes from the torch wheel (cmake/QloradTorch.cmake), whose libraries find CUDA's
# through their own RUNPATH, relative to themselves ($ORIGIN/../../nvidia/...). The install
# mirrors the wheel's layout under PREFIX/lib/qlorad: `torch` and `nvidia` there are symbolic links
# to the wheel's folders (QLORAD_INSTALL_TORCH=link, the default) or copies of them (=copy, several
# GiB, for a self-contained PREFIX), and the trainer's RUNPATH points only there, relative to
# itself. So PREFIX moves as a whole, and pointing the two links elsewhere
# (ln -sfn NEW/site-packages/torch PREFIX/lib/qlorad/torch) swaps LibTorch without a rebuild.
include(GNUInstallDirs)

set(QLORAD_INSTALL_TORCH "link" CACHE STRING "LibTorch in PREFIX/lib/qlorad: link (to the wheel) or copy")
set_property(CACHE QLORAD_INSTALL_TORCH PROPERTY STRINGS link copy)
if(NOT QLORAD_INSTALL_TORCH MATCHES "^(link|copy)$")
  message(FATAL_ERROR "QLORAD_INSTALL_TORCH must be link or copy, not '${QLORAD_INSTALL_TORCH}'")
endif()

set(QLORAD_INSTALL_LIBDIR "${CMAKE_INSTALL_LIBDIR}/qlorad")

# The RUNPATH of what links LibTorch, installed in `from` (a folder relative to PREFIX).
function(qlorad_install_rpath target from)
  file(RELATIVE_PATH _up "/${from}" "/${QLORAD_INSTALL_LIBDIR}")
  set(_lib "$ORIGIN")
  if(_up)
    set(_lib "$ORIGIN/${_up}")
  endif()
  set_target_properties(${target} PROPERTIES INSTALL_RPATH
    "${_lib};${_lib}/torch/lib;${_lib}/nvidia/cu13/lib;${_lib}/nvidia/cudnn/lib;${_lib}/nvidia/nccl/lib")
endfunction()

# The wheel's folders, from where LibTorch was found: .../site-packages/torch/share/cmake/Torch.
if(QLORAD_WITH_TORCH)
  get_filename_component(_qlorad_torch_pkg "${Torch_DIR}/../../.." ABSOLUTE)
  get_filename_component(_qlorad_site "${_qlorad_torch_pkg}/.." ABSOLUTE)
  set(QLORAD_TORCH_PACKAGE_DIR "${_qlorad_torch_pkg}" CACHE PATH "the torch package the install uses")
  set(QLORAD_NVIDIA_PACKAGE_DIR "${_qlorad_site}/nvidia" CACHE PATH "the wheels' CUDA libraries")
  if(QLORAD_INSTALL_TORCH STREQUAL "copy")
    install(DIRECTORY "${QLORAD_TORCH_PACKAGE_DIR}/lib" DESTINATION "${QLORAD_INSTALL_LIBDIR}/torch"
            USE_SOURCE_PERMISSIONS)
    if(EXISTS "${QLORAD_NVIDIA_PACKAGE_DIR}")
      install(DIRECTORY "${QLORAD_NVIDIA_PACKAGE_DIR}/" DESTINATION "${QLORAD_INSTALL_LIBDIR}/nvidia"
              USE_SOURCE_PERMISSIONS)
    endif()
  else()
    install(CODE "
      set(_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${QLORAD_INSTALL_LIBDIR}\")
      file(MAKE_DIRECTORY \"\${_dir}\")
      foreach(_pair \"torch=${QLORAD_TORCH_PACKAGE_DIR}\" \"nvidia=${QLORAD_NVIDIA_PACKAGE_DIR}\")
        string(REPLACE \"=\" \";\" _pair \"\${_pair}\")
        list(GET _pair 0 _name)
        list(GET _pair 1 _target)
        if(EXISTS \"\${_target}\")
          file(REMOVE \"\${_dir}/\${_name}\")
          file(CREATE_LINK \"\${_target}\" \"\${_dir}/\${_name}\" SYMBOLIC)
          message(STATUS \"Linking: \${_dir}/\${_name} -> \${_target}\")
        endif()
      endforeach()")
  endif()
endif()

install(DIRECTORY deploy/ DESTINATION "${CMAKE_INSTALL_DATADIR}/qlorad/deploy")
