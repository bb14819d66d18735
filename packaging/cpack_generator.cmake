# CPACK_PROJECT_CONFIG_FILE: read by cpack once per generator, after CPackConfig.cmake
# (CMakeLists.txt, "Two packages from one build"). The tarball (TGZ) keeps the defaults: every
# install rule outside component `deb`, under the prefix the archive is unpacked into. The .deb
# takes component `deb` only, whose destinations start at /.
if(CPACK_GENERATOR STREQUAL "DEB")
  list(GET CPACK_INSTALL_CMAKE_PROJECTS 0 layercache_build_dir)
  set(CPACK_INSTALL_CMAKE_PROJECTS "${layercache_build_dir};layercache;deb;/")
  set(CPACK_PACKAGING_INSTALL_PREFIX /)
endif()
