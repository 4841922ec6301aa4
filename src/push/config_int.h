/* config_int.h - what config.c and config_redis.c share: error messages
 * and reading JSON values into settings. Internal to the configuration. */
#ifndef HERALD_PUSH_CONFIG_INT_H
#define HERALD_PUSH_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>

#include "push/config.h"
#include "push/push.h"

/* Writes the message into err (errlen bytes, always terminated). */
void push_cfg_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A JSON true/false into *out. Returns 0, or -1 for another value. */
int push_cfg_bool(push_json v, int *out);
/* A JSON integer 0..UINT32_MAX into *out. Returns 0 or -1. */
int push_cfg_u32(push_json v, uint32_t *out);
/* A JSON string as a malloc'd C string (the caller frees it), or NULL for
 * another value or out of memory. */
char *push_cfg_strdup(push_json v);
/* The "redis" object into c (config_redis.c). Returns 0, or -1 with a
 * message naming the key in err. */
int push_cfg_load_redis(push_config *c, push_json o, char *err, size_t errlen);

#endif
