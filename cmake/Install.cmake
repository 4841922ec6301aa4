# Install.cmake - what `cmake --install` and `cpack -G DEB` ship.
# Included at the end of CMakeLists.txt; uses its source lists
# (HERALD_CORE_SOURCES, HERALD_RT_SOURCES) and leaves its targets alone.
#
#   include/herald/{core,rt,herald,version}.h
#   lib/libherald.so.0.1.0 (+ .so.0, .so)   core + runtime, only herald_* out
#   lib/libherald.a
#   lib/libherald-core.so.0.1.0 (+ .so.0, .so), lib/libherald-core.a
#   lib/pkgconfig/herald.pc, herald-core.pc
#   lib/cmake/herald/                         find_package(herald)
#   bin/herald
#   share/man/man1/herald.1, share/man/man3/herald.3
#   share/doc/herald/herald.service, herald.json
#
# The .deb also puts the unit in /lib/systemd/system and the example config
# in /etc/herald/herald.json (a conffile); a plain `cmake --install` never
# writes outside its prefix.

# The fuzz build instruments everything for libFuzzer; nothing to ship.
if(HERALD_FUZZ)
  return()
endif()

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# ABI policy (docs/api.md): the soname carries the major version only.
set(HERALD_SOVERSION ${PROJECT_VERSION_MAJOR})

# ---- herald/version.h: generated, used in the tree and installed ---------
set(HERALD_GENERATED_INCLUDE ${CMAKE_BINARY_DIR}/include)
configure_file(${CMAKE_CURRENT_LIST_DIR}/version.h.in
               ${HERALD_GENERATED_INCLUDE}/herald/version.h @ONLY)
# Lets herald/herald.h (which includes version.h) compile in the tree too.
target_include_directories(herald_core PUBLIC ${HERALD_GENERATED_INCLUDE})

# ---- The shipped libraries ------------------------------------------------
# The same sources as herald_core/herald_rt, compiled once more with hidden
# visibility, so only HERALD_API (herald_*) functions leave the shared
# objects. The archives are made of the same objects.
set(HERALD_PUBLIC_INCLUDES
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${HERALD_GENERATED_INCLUDE}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

add_library(herald_core_objects OBJECT ${HERALD_CORE_SOURCES})
target_include_directories(herald_core_objects
                           PUBLIC ${HERALD_PUBLIC_INCLUDES}
                           PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(herald_core_objects PRIVATE ZLIB::ZLIB)

add_library(herald_rt_objects OBJECT ${HERALD_RT_SOURCES})
target_include_directories(herald_rt_objects
                           PUBLIC ${HERALD_PUBLIC_INCLUDES}
                           PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(herald_rt_objects PRIVATE ZLIB::ZLIB PkgConfig::LIBUV
                      OpenSSL::SSL OpenSSL::Crypto Threads::Threads)

set_target_properties(herald_core_objects herald_rt_objects PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  C_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON)

# libherald-core: the sans-I/O core; zlib is its only dependency.
add_library(herald_core_shared SHARED $<TARGET_OBJECTS:herald_core_objects>)
add_library(herald_core_static STATIC $<TARGET_OBJECTS:herald_core_objects>)
target_link_libraries(herald_core_shared PRIVATE ZLIB::ZLIB)
target_link_libraries(herald_core_static PRIVATE ZLIB::ZLIB)

# libherald: core + runtime.
add_library(herald_shared SHARED $<TARGET_OBJECTS:herald_core_objects>
                                 $<TARGET_OBJECTS:herald_rt_objects>)
add_library(herald_static STATIC $<TARGET_OBJECTS:herald_core_objects>
                                 $<TARGET_OBJECTS:herald_rt_objects>)
foreach(t herald_shared herald_static)
  target_link_libraries(${t} PRIVATE ZLIB::ZLIB PkgConfig::LIBUV OpenSSL::SSL
                        OpenSSL::Crypto Threads::Threads)
endforeach()

foreach(t herald_core_shared herald_core_static herald_shared herald_static)
  target_include_directories(${t} INTERFACE ${HERALD_PUBLIC_INCLUDES})
endforeach()
set_target_properties(herald_shared PROPERTIES
  OUTPUT_NAME herald EXPORT_NAME herald
  VERSION ${PROJECT_VERSION} SOVERSION ${HERALD_SOVERSION})
set_target_properties(herald_static PROPERTIES
  OUTPUT_NAME herald EXPORT_NAME herald_static)
set_target_properties(herald_core_shared PROPERTIES
  OUTPUT_NAME herald-core EXPORT_NAME core
  VERSION ${PROJECT_VERSION} SOVERSION ${HERALD_SOVERSION})
set_target_properties(herald_core_static PROPERTIES
  OUTPUT_NAME herald-core EXPORT_NAME core_static)
# A shared library must not carry undefined references to the outside.
foreach(t herald_core_shared herald_shared)
  if(NOT HERALD_SANITIZE)
    target_link_options(${t} PRIVATE LINKER:--no-undefined)
  endif()
  target_link_options(${t} PRIVATE LINKER:--as-needed)
endforeach()

# ---- Install rules --------------------------------------------------------
install(FILES ${PROJECT_SOURCE_DIR}/include/herald/core.h
              ${PROJECT_SOURCE_DIR}/include/herald/rt.h
              ${PROJECT_SOURCE_DIR}/include/herald/herald.h
              ${HERALD_GENERATED_INCLUDE}/herald/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/herald)

install(TARGETS herald_shared herald_core_shared EXPORT heraldTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS herald_static herald_core_static EXPORT heraldStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS herald RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# CMake package: find_package(herald) -> herald::herald, herald::core.
set(HERALD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/herald)
install(EXPORT heraldTargets NAMESPACE herald::
        DESTINATION ${HERALD_CMAKE_DIR})
install(EXPORT heraldStaticTargets NAMESPACE herald::
        DESTINATION ${HERALD_CMAKE_DIR})
configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/heraldConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/heraldConfig.cmake
  INSTALL_DESTINATION ${HERALD_CMAKE_DIR})
# Before 1.0 a minor version may break the ABI (docs/api.md).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(HERALD_COMPAT SameMinorVersion)
else()
  set(HERALD_COMPAT SameMajorVersion)
endif()
write_basic_package_version_file(
  ${CMAKE_BINARY_DIR}/cmake/heraldConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${HERALD_COMPAT})
install(FILES ${CMAKE_BINARY_DIR}/cmake/heraldConfig.cmake
              ${CMAKE_BINARY_DIR}/cmake/heraldConfigVersion.cmake
        DESTINATION ${HERALD_CMAKE_DIR})

# pkg-config files. Their prefix is only known at install time
# (`cmake --install build --prefix P`), so they are written then, into the
# build tree, and installed from there.
set(HERALD_PC_DIR ${CMAKE_BINARY_DIR}/pkgconfig)
install(CODE "
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  set(HERALD_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  foreach(pair \"LIBDIR;${CMAKE_INSTALL_LIBDIR}\"
               \"INCLUDEDIR;${CMAKE_INSTALL_INCLUDEDIR}\")
    list(GET pair 0 name)
    list(GET pair 1 dir)
    if(IS_ABSOLUTE \"\${dir}\")
      set(HERALD_PC_\${name} \"\${dir}\")
    else()
      set(HERALD_PC_\${name} \"\\\${prefix}/\${dir}\")
    endif()
  endforeach()
  foreach(pc herald herald-core)
    configure_file(\"${CMAKE_CURRENT_LIST_DIR}/\${pc}.pc.in\"
                   \"${HERALD_PC_DIR}/\${pc}.pc\" @ONLY)
  endforeach()
")
install(FILES ${HERALD_PC_DIR}/herald.pc ${HERALD_PC_DIR}/herald-core.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# Manual pages, the systemd unit and the example config.
install(FILES ${PROJECT_SOURCE_DIR}/man/herald.1
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${PROJECT_SOURCE_DIR}/man/herald.3
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man3)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/herald.service
              ${PROJECT_SOURCE_DIR}/packaging/herald.json
              ${PROJECT_SOURCE_DIR}/docs/config.md
              ${PROJECT_SOURCE_DIR}/docs/api.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# System locations, for the package only: component "system" is left out of
# a plain `cmake --install` (EXCLUDE_FROM_ALL) and named by CPack below.
install(FILES ${PROJECT_SOURCE_DIR}/packaging/herald.service
        DESTINATION /lib/systemd/system
        COMPONENT system EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/herald.json
        DESTINATION /etc/herald
        COMPONENT system EXCLUDE_FROM_ALL)

# ---- CPack: one Debian package, `herald` ---------------------------------
set(CPACK_PACKAGE_NAME herald)
set(CPACK_PACKAGE_VENDOR "Herald")
set(CPACK_PACKAGE_CONTACT "Herald Engineers <eng@herald.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "WebSocket library and real-time push server")
set(CPACK_PACKAGE_DESCRIPTION
    "Herald is a C17 WebSocket (RFC 6455) library and a push server.
The library has a sans-I/O protocol core (libherald-core, needing only zlib)
and a runtime on libuv with servers, clients, TLS and backpressure
(libherald). The herald program serves channels over WebSocket and SSE with
an HTTP API for backends, history with recovery, presence and JWT auth; its
subcommands echo, client and bench help test WebSocket endpoints.
The package ships a hardened systemd unit (herald.service, not enabled) and
an example configuration in /etc/herald/herald.json.")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_CMAKE_PROJECTS
    "${CMAKE_BINARY_DIR};herald;Unspecified;/"
    "${CMAKE_BINARY_DIR};herald;system;/")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Herald Engineers <eng@herald.invalid>")
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6 (>= 2.34), libuv1 (>= 1.44.1), libssl3 (>= 3.0.0), zlib1g (>= 1:1.2.0)")
# dpkg keeps an edited /etc/herald/herald.json across upgrades and removal.
file(WRITE ${CMAKE_BINARY_DIR}/deb/conffiles "/etc/herald/herald.json\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
