/* settings.h - changing a push_config one setting at a time, for front ends
 * that read settings from somewhere other than the JSON file: the command
 * line of `herald serve` (src/app/serve.c). Each function checks its value
 * as the JSON key of the same meaning does (docs/config.md). Strings are
 * copied: the config owns its copies and push_config_free() frees them.
 * Every function that takes err returns 0, or -1 with a message in
 * err[0..errlen) and c as it was. Implemented in config.c. */
#ifndef HERALD_PUSH_SETTINGS_H
#define HERALD_PUSH_SETTINGS_H

#include <stddef.h>

#include "push/server.h"

/* Removes every listen address. */
void push_config_clear_listen(push_config *c);

/* Adds a listen address ("host:port", "[v6]:port" or ":port"; checked when
 * the server binds it). At most 8. */
int push_config_add_listen(push_config *c, const char *addr, char *err,
                           size_t errlen);

/* Replaces the string field *field of a config (api_key, jwt_hmac_secret,
 * tls_cert, tls_key) with a copy of value. */
int push_config_set_string(char **field, const char *value, char *err,
                           size_t errlen);

/* Removes every Redis address. */
void push_config_clear_redis(push_config *c);

/* Adds a Redis shard's address ("host:port"; one per shard, at most
 * PUSH_REDIS_MAX_SHARDS). Does not choose the redis engine. */
int push_config_add_redis(push_config *c, const char *addr, char *err,
                          size_t errlen);

/* Adds an allowed Origin value ("*" allows any). */
int push_config_add_origin(push_config *c, const char *origin, char *err,
                           size_t errlen);

/* Sets this node's name: 1-12 letters, digits or underscores. */
int push_config_set_node_name(push_config *c, const char *name, char *err,
                              size_t errlen);

/* Sets the log level from its name: debug, info, warn or error. */
int push_config_set_log_level(push_config *c, const char *name, char *err,
                              size_t errlen);

/* Completes c once every source of settings was applied, and refuses an
 * inconsistent one: adds the demo namespaces when demo is set; a TLS
 * certificate needs a key and the reverse, the redis engine an address,
 * and a config that requires tokens a JWT key. Call it once, last. On
 * error c may hold the demo namespaces; push_config_free() it either
 * way. */
int push_config_finish(push_config *c, char *err, size_t errlen);

#endif
