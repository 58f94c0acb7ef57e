# cmake --install: libkeel (shared with a SONAME, and static), the public headers, the CMake
# package (find_package(keel CONFIG) -> keel::keel, keel::keel_static) and keel.pc. The server,
# the test harness (keel_testing) and the command are not part of the library package; the
# command is installed as a program.
include(CMakePackageConfigHelpers)

install(TARGETS keel_shared keel_static EXPORT keelTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/keel DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/keel/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/keel)
install(TARGETS keel RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(KEEL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
install(EXPORT keelTargets NAMESPACE keel:: FILE keelTargets.cmake DESTINATION ${KEEL_CMAKE_DIR})
configure_package_config_file(cmake/keelConfig.cmake.in ${PROJECT_BINARY_DIR}/keelConfig.cmake
  INSTALL_DESTINATION ${KEEL_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/keelConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/keelConfig.cmake ${PROJECT_BINARY_DIR}/keelConfigVersion.cmake
  DESTINATION ${KEEL_CMAKE_DIR})

# keel.pc names its prefix relative to itself (lib/pkgconfig -> ../..), so it stays right
# wherever `cmake --install --prefix` puts it.
string(REGEX REPLACE "[^/]+" ".." KEEL_PC_TO_PREFIX "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
configure_file(cmake/keel.pc.in ${PROJECT_BINARY_DIR}/keel.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/keel.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
