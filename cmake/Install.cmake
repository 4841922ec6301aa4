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
# A plain `cmake --install` never writes outside its prefix. `cpack -G DEB`
# (scripts/build-debs.sh, from a build configured with
# CMAKE_INSTALL_PREFIX=/usr so that libraries go to the multiarch directory)
# makes three Debian packages from install components:
#
#   libherald0      component lib + deb_lib: the shared libraries
#   libherald-dev   component dev + deb_dev: headers, .so links, static
#                   libraries, pkg-config, CMake package, herald(3)
#   herald          component bin + deb_bin: the program, herald(1), the
#                   systemd unit, /etc/herald/herald.json (a conffile, 0640
#                   root:herald), docs/protocol.md; postinst creates the
#                   system user `herald`
#
# Each package has /usr/share/doc/<package>/copyright and
# changelog.Debian.gz (packaging/debian/). The deb_* components are
# EXCLUDE_FROM_ALL: only the packages get them.

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
target_link_libraries(herald_core_objects PRIVATE ${HERALD_CORE_LIBS})
if(HERALD_ISAL)
  target_compile_definitions(herald_core_objects PRIVATE HERALD_HAVE_ISAL)
endif()

add_library(herald_rt_objects OBJECT ${HERALD_RT_SOURCES})
target_include_directories(herald_rt_objects
                           PUBLIC ${HERALD_PUBLIC_INCLUDES}
                           PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(herald_rt_objects PRIVATE ZLIB::ZLIB PkgConfig::LIBUV
                      PkgConfig::LIBURING OpenSSL::SSL OpenSSL::Crypto Threads::Threads)

set_target_properties(herald_core_objects herald_rt_objects PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  C_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON)

# libherald-core: the sans-I/O core; zlib (and ISA-L) its only dependencies.
add_library(herald_core_shared SHARED $<TARGET_OBJECTS:herald_core_objects>)
add_library(herald_core_static STATIC $<TARGET_OBJECTS:herald_core_objects>)
target_link_libraries(herald_core_shared PRIVATE ${HERALD_CORE_LIBS})
target_link_libraries(herald_core_static PRIVATE ${HERALD_CORE_LIBS})

# libherald: core + runtime.
add_library(herald_shared SHARED $<TARGET_OBJECTS:herald_core_objects>
                                 $<TARGET_OBJECTS:herald_rt_objects>)
add_library(herald_static STATIC $<TARGET_OBJECTS:herald_core_objects>
                                 $<TARGET_OBJECTS:herald_rt_objects>)
foreach(t herald_shared herald_static)
  target_link_libraries(${t} PRIVATE ${HERALD_CORE_LIBS} PkgConfig::LIBUV
                        PkgConfig::LIBURING OpenSSL::SSL OpenSSL::Crypto
                        Threads::Threads)
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
# Components: lib, dev and bin are installed by a plain `cmake --install`
# and packaged; docs (uncompressed man pages, the example unit and config)
# only by the plain install; deb_* only into the packages.
install(FILES ${PROJECT_SOURCE_DIR}/include/herald/core.h
              ${PROJECT_SOURCE_DIR}/include/herald/rt.h
              ${PROJECT_SOURCE_DIR}/include/herald/herald.h
              ${HERALD_GENERATED_INCLUDE}/herald/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/herald COMPONENT dev)

install(TARGETS herald_shared herald_core_shared EXPORT heraldTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          COMPONENT lib NAMELINK_COMPONENT dev
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS herald_static herald_core_static EXPORT heraldStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS herald RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT bin)

# CMake package: find_package(herald) -> herald::herald, herald::core.
set(HERALD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/herald)
install(EXPORT heraldTargets NAMESPACE herald::
        DESTINATION ${HERALD_CMAKE_DIR} COMPONENT dev)
install(EXPORT heraldStaticTargets NAMESPACE herald::
        DESTINATION ${HERALD_CMAKE_DIR} COMPONENT dev)
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
        DESTINATION ${HERALD_CMAKE_DIR} COMPONENT dev)

# pkg-config files. Their prefix is only known at install time
# (`cmake --install build --prefix P`), so they are written then, into the
# build tree, and installed from there.
set(HERALD_PC_DIR ${CMAKE_BINARY_DIR}/pkgconfig)
install(CODE "
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  set(HERALD_CORE_PC_REQUIRES \"${HERALD_CORE_PC_REQUIRES}\")
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
" COMPONENT dev)
install(FILES ${HERALD_PC_DIR}/herald.pc ${HERALD_PC_DIR}/herald-core.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# Manual pages, the systemd unit and the example config (plain install).
install(FILES ${PROJECT_SOURCE_DIR}/man/herald.1
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT docs)
install(FILES ${PROJECT_SOURCE_DIR}/man/herald.3
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man3 COMPONENT docs)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/herald.service
              ${PROJECT_SOURCE_DIR}/packaging/herald.json
              ${PROJECT_SOURCE_DIR}/docs/config.md
              ${PROJECT_SOURCE_DIR}/docs/api.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT docs)

# ---- Debian packages: what only they hold -----------------------------------
# Debian wants man pages and changelogs compressed with gzip -9n (no name,
# no time stamp, so the bytes are reproducible).
set(HERALD_DEB_DIR ${CMAKE_BINARY_DIR}/deb)
file(MAKE_DIRECTORY ${HERALD_DEB_DIR})
find_program(HERALD_GZIP gzip)
foreach(pair "man/herald.1;herald.1.gz" "man/herald.3;herald.3.gz"
             "packaging/debian/changelog;changelog.Debian.gz")
  list(GET pair 0 src)
  list(GET pair 1 dst)
  if(HERALD_GZIP)
    execute_process(COMMAND ${HERALD_GZIP} -9n -c ${PROJECT_SOURCE_DIR}/${src}
                    OUTPUT_FILE ${HERALD_DEB_DIR}/${dst})
  endif()
endforeach()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${PROJECT_SOURCE_DIR}/man/herald.1
             ${PROJECT_SOURCE_DIR}/man/herald.3
             ${PROJECT_SOURCE_DIR}/packaging/debian/changelog)

foreach(pkg libherald0 libherald-dev herald)
  if(pkg STREQUAL "libherald0")
    set(comp deb_lib)
  elseif(pkg STREQUAL "libherald-dev")
    set(comp deb_dev)
  else()
    set(comp deb_bin)
  endif()
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/copyright
                ${HERALD_DEB_DIR}/changelog.Debian.gz
          DESTINATION share/doc/${pkg} COMPONENT ${comp} EXCLUDE_FROM_ALL)
endforeach()
install(FILES ${HERALD_DEB_DIR}/herald.3.gz
        DESTINATION share/man/man3 COMPONENT deb_dev EXCLUDE_FROM_ALL)
install(FILES ${HERALD_DEB_DIR}/herald.1.gz
        DESTINATION share/man/man1 COMPONENT deb_bin EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/docs/protocol.md
              ${PROJECT_SOURCE_DIR}/docs/config.md
              ${PROJECT_SOURCE_DIR}/docs/tools.md
        DESTINATION share/doc/herald COMPONENT deb_bin EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/herald.service
        DESTINATION /lib/systemd/system COMPONENT deb_bin EXCLUDE_FROM_ALL)
# 0640: the config holds the API key and the JWT secret; postinst gives it
# to group herald.
install(FILES ${PROJECT_SOURCE_DIR}/packaging/herald.json
        DESTINATION /etc/herald
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
        COMPONENT deb_bin EXCLUDE_FROM_ALL)

# ---- CPack: three Debian packages ------------------------------------------
set(CPACK_PACKAGE_NAME herald)
set(CPACK_PACKAGE_VENDOR "Herald")
set(CPACK_PACKAGE_CONTACT "Herald Engineers <eng@herald.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ONE_PER_GROUP)
set(CPACK_COMPONENTS_ALL lib deb_lib dev deb_dev bin deb_bin)
foreach(pair "lib;libherald0" "deb_lib;libherald0" "dev;libherald-dev"
             "deb_dev;libherald-dev" "bin;herald" "deb_bin;herald")
  list(GET pair 0 comp)
  list(GET pair 1 group)
  string(TOUPPER ${comp} COMP)
  set(CPACK_COMPONENT_${COMP}_GROUP ${group})
endforeach()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Herald Engineers <eng@herald.invalid>")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://herald.invalid/")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(HERALD_DEB_VERSION "${PROJECT_VERSION}-1")

# libherald0
set(CPACK_DEBIAN_LIBHERALD0_PACKAGE_NAME libherald0)
set(CPACK_DEBIAN_LIBHERALD0_PACKAGE_SECTION libs)
# shlibs for every package with a shared object (only libherald0 has any);
# CPack 3.25 takes these two globally only.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_LIBHERALD0_DESCRIPTION
    "WebSocket (RFC 6455) library: shared libraries
libherald-core is the sans-I/O protocol core (frames, the opening handshake,
UTF-8 checks, permessage-deflate), needing only zlib and ISA-L. libherald adds the
runtime on libuv: servers and clients, TLS, timeouts and backpressure.")
file(WRITE ${HERALD_DEB_DIR}/triggers "activate-noawait ldconfig\n")
set(CPACK_DEBIAN_LIBHERALD0_PACKAGE_CONTROL_EXTRA ${HERALD_DEB_DIR}/triggers)

# libherald-dev
set(CPACK_DEBIAN_LIBHERALD-DEV_PACKAGE_NAME libherald-dev)
set(CPACK_DEBIAN_LIBHERALD-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_LIBHERALD-DEV_PACKAGE_DEPENDS
    "libherald0 (= ${HERALD_DEB_VERSION}), libuv1-dev, liburing-dev, libssl-dev, zlib1g-dev, libisal-dev")
set(CPACK_DEBIAN_LIBHERALD-DEV_DESCRIPTION
    "WebSocket (RFC 6455) library: development files
Headers, static libraries, pkg-config files (herald, herald-core), the CMake
package (find_package(herald)) and the herald(3) manual page of the Herald
WebSocket library.")

# herald
set(CPACK_DEBIAN_HERALD_PACKAGE_NAME herald)
set(CPACK_DEBIAN_HERALD_PACKAGE_SECTION net)
set(CPACK_DEBIAN_HERALD_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_HERALD_DESCRIPTION
    "WebSocket push server and WebSocket tools
herald serves channels over WebSocket and Server-Sent Events, with an HTTP
API for backends, history with recovery, presence and JWT auth. Its
subcommands echo, client and bench are an echo server, an interactive and
scriptable WebSocket client and a load generator.
The package ships a hardened systemd unit (herald.service, not enabled) and
an example configuration, /etc/herald/herald.json, readable by root and the
system user herald only.")
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/herald.postinst
               ${HERALD_DEB_DIR}/herald/postinst COPYONLY)
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/herald.prerm
               ${HERALD_DEB_DIR}/herald/prerm COPYONLY)
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/herald.postrm
               ${HERALD_DEB_DIR}/herald/postrm COPYONLY)
# dpkg keeps an edited /etc/herald/herald.json across upgrades and removal.
file(WRITE ${HERALD_DEB_DIR}/herald/conffiles "/etc/herald/herald.json\n")
set(CPACK_DEBIAN_HERALD_PACKAGE_CONTROL_EXTRA
    ${HERALD_DEB_DIR}/herald/conffiles ${HERALD_DEB_DIR}/herald/postinst
    ${HERALD_DEB_DIR}/herald/prerm ${HERALD_DEB_DIR}/herald/postrm)
include(CPack)
