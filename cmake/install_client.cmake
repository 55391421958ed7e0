# `cmake --install` of the C++ client: the static libraries attn_client (as
# attnserve::client), attn_proto and attn_common, their headers under
# include/attnserve, and a package config so that another project can
#   find_package(attnserve CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE attnserve::client)
# tests/install builds such a consumer against an installed tree.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(ATTN_INSTALL_INCLUDE ${CMAKE_INSTALL_INCLUDEDIR}/attnserve)
set(ATTN_INSTALL_CMAKE ${CMAKE_INSTALL_LIBDIR}/cmake/attnserve)

set_target_properties(attn_client PROPERTIES EXPORT_NAME client)
set_target_properties(attn_proto PROPERTIES EXPORT_NAME proto)
set_target_properties(attn_common PROPERTIES EXPORT_NAME common)
set_target_properties(attn_pem PROPERTIES EXPORT_NAME pem)
set_target_properties(attn_warnings PROPERTIES EXPORT_NAME warnings)
foreach(lib IN ITEMS attn_client attn_proto attn_common attn_pem)
  target_include_directories(${lib} INTERFACE
                             $<INSTALL_INTERFACE:${ATTN_INSTALL_INCLUDE}>)
endforeach()

install(TARGETS attn_client attn_proto attn_common attn_pem attn_warnings
        EXPORT attnserveTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES
          ${PROJECT_SOURCE_DIR}/client/attn_client.h
          ${PROJECT_SOURCE_DIR}/client/tensor_convert.h
          ${PROJECT_SOURCE_DIR}/client/array_io.h
          ${PROJECT_SOURCE_DIR}/client/service_config.h
          ${PROJECT_SOURCE_DIR}/client/channel_credentials.h
        DESTINATION ${ATTN_INSTALL_INCLUDE}/client)
install(FILES ${PROJECT_SOURCE_DIR}/common/float16.h
              ${PROJECT_SOURCE_DIR}/common/pem_files.h
        DESTINATION ${ATTN_INSTALL_INCLUDE}/common)
install(FILES
          ${CMAKE_BINARY_DIR}/proto/attn/v1/attention.pb.h
          ${CMAKE_BINARY_DIR}/proto/attn/v1/attention.grpc.pb.h
        DESTINATION ${ATTN_INSTALL_INCLUDE}/attn/v1)
install(EXPORT attnserveTargets NAMESPACE attnserve::
        DESTINATION ${ATTN_INSTALL_CMAKE})

file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/attnserveConfig.cmake.in [=[
@PACKAGE_INIT@
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(OpenSSL)
find_dependency(absl CONFIG)
find_dependency(Protobuf)
find_dependency(gRPC CONFIG)
find_dependency(nlohmann_json CONFIG)
include("${CMAKE_CURRENT_LIST_DIR}/attnserveTargets.cmake")
check_required_components(attnserve)
]=])
configure_package_config_file(
  ${CMAKE_CURRENT_BINARY_DIR}/attnserveConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/attnserveConfig.cmake
  INSTALL_DESTINATION ${ATTN_INSTALL_CMAKE})
write_basic_package_version_file(
  ${CMAKE_CURRENT_BINARY_DIR}/attnserveConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/attnserveConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/attnserveConfigVersion.cmake
        DESTINATION ${ATTN_INSTALL_CMAKE})
