# The installable library: libkvferry.so (target kvferry_lib, exported as kvferry::kvferry),
# its public headers, a CMake package (find_package(kvferry)) and a pkg-config file.
#
# The library is the node and everything under it (actors, transport, gpu, config, ops, core),
# linked from the same objects the tool and the tests use. Its public headers are
# include/kvferry/ alone, which need the standard library only: a consumer never sees CAF or UCX
# (libkvferry.so needs their shared libraries at run time, as Debian installs them).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

add_library(kvferry_lib SHARED
  $<TARGET_OBJECTS:kvferry_actors> $<TARGET_OBJECTS:kvferry_config>
  $<TARGET_OBJECTS:kvferry_transport> $<TARGET_OBJECTS:kvferry_gpu>
  $<TARGET_OBJECTS:kvferry_ops> $<TARGET_OBJECTS:kvferry_core>)
add_library(kvferry::kvferry ALIAS kvferry_lib)
set_target_properties(kvferry_lib PROPERTIES
  OUTPUT_NAME kvferry
  EXPORT_NAME kvferry
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
  LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/lib)
target_include_directories(kvferry_lib INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(kvferry_lib INTERFACE cxx_std_17)
target_link_libraries(kvferry_lib PRIVATE
  CAF::openssl CAF::io CAF::core OpenSSL::SSL OpenSSL::Crypto ${CMAKE_DL_LIBS} PkgConfig::UCX spdlog::spdlog fmt::fmt tomlplusplus::tomlplusplus
  Threads::Threads)
if(KVFERRY_WITH_CUDA)
  target_link_libraries(kvferry_lib PRIVATE CUDA::cudart)
endif()
# Every symbol must resolve inside the library and its dependencies.
target_link_options(kvferry_lib PRIVATE -Wl,--no-undefined)

install(TARGETS kvferry_lib EXPORT kvferry_targets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/kvferry
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
install(EXPORT kvferry_targets NAMESPACE kvferry::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kvferry FILE kvferryTargets.cmake)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kvferryConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kvferryConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kvferry)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kvferryConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kvferryConfig.cmake ${PROJECT_BINARY_DIR}/kvferryConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kvferry)
# Relocatable: the prefix is found from the .pc file's own place (cmake --install --prefix X).
file(RELATIVE_PATH KVFERRY_PC_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
configure_file(${PROJECT_SOURCE_DIR}/cmake/kvferry.pc.in ${PROJECT_BINARY_DIR}/kvferry.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kvferry.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
# The tool, for operators (kvferry node / demo / bench / chaos).
install(TARGETS kvferry RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
