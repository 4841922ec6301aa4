/* web.h - the demo page and the JavaScript client, embedded into the binary
 * at build time (cmake/embed.cmake generates the table from web/). */
#ifndef HERALD_PUSH_WEB_H
#define HERALD_PUSH_WEB_H

#include <stddef.h>

typedef struct push_web_file {
  const char *path; /* "/", "/herald.js", ... */
  const char *type; /* Content-Type */
  const unsigned char *data;
  size_t len;
} push_web_file;

/* The embedded file served at path, or NULL. */
const push_web_file *push_web_find(const char *path, size_t len);

#endif
