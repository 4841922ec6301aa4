/*
 * herald/herald.h - everything public in one include: the sans-I/O protocol
 * core (herald/core.h), the libuv runtime (herald/rt.h) and the version
 * macros (herald/version.h). Link with libherald (pkg-config herald, or
 * herald::herald from find_package(herald)).
 *
 * A program that only needs the core includes herald/core.h and links with
 * libherald-core (pkg-config herald-core, or herald::core).
 */
#ifndef HERALD_HERALD_H
#define HERALD_HERALD_H

#include "herald/core.h"
#include "herald/rt.h"
#include "herald/version.h"

#endif /* HERALD_HERALD_H */
