/* sha1.h - SHA-1 (FIPS 180-4), only for Sec-WebSocket-Accept. Internal. */
#ifndef HERALD_SHA1_H
#define HERALD_SHA1_H

#include <stddef.h>
#include <stdint.h>

typedef struct herald_sha1 {
  uint32_t h[5];
  uint64_t total;
  uint8_t block[64];
  size_t used;
} herald_sha1;

void herald__sha1_init(herald_sha1 *s);
void herald__sha1_update(herald_sha1 *s, const void *p, size_t n);
void herald__sha1_final(herald_sha1 *s, uint8_t digest[20]);

#endif
