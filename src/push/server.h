/* server.h - `herald serve`: configuration and the server that binds the
 * push modules (push.h) to the runtime. docs/config.md documents every key;
 * keep the two in step. */
#ifndef HERALD_PUSH_SERVER_H
#define HERALD_PUSH_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "push/limits.h"
#include "push/log.h"
#include "push/push.h"
#include "push/redis.h"

typedef struct push_config {
  char *listen[8];
  size_t nlisten;
  int anonymous;  /* connect without a token */
  char **origins; /* allowed Origin values; "*" allows all */
  size_t norigins;
  char *api_key; /* NULL: the HTTP API is refused (401) */
  char *jwt_hmac_secret;
  char *jwt_rsa_pem; /* loaded file contents */
  char *jwt_ec_pem;
  int jwt_require_exp;
  push_ns *ns;
  size_t nns;
  uint32_t max_channels;       /* per client */
  uint32_t max_channels_total; /* in this node's hub; 0: no limit */
  /* Token buckets (docs/config.md "rate_limits"); per_s 0: off. */
  push_rate rate_commands;    /* commands per connection */
  push_rate rate_publishes;   /* publish commands per connection */
  push_rate rate_subscribes;  /* subscribe + unsubscribe per connection */
  push_rate rate_connections; /* new WebSockets per client IP */
  size_t max_command_bytes;   /* one WebSocket message of commands */
  size_t output_cap;          /* per-client send buffer: over it -> 3004 */
  uint32_t ping_interval_s;   /* WebSocket pings; 0: off */
  uint32_t pong_timeout_s;
  size_t max_http_body;
  uint32_t sse_keepalive_s;
  uint32_t shutdown_grace_s;
  int log_level;
  int demo; /* demo namespaces and the ticker publisher */
  char *tls_cert;
  char *tls_key;
  /* Scale-out: "engine": "redis" (docs/scaling.md). */
  int engine_redis;
  push_redis_config redis;
  char *node_name; /* NULL: random */
} push_config;

/* Safe local defaults (docs/config.md). Returns 0 or -1 (out of memory). */
int push_config_defaults(push_config *c);

/* Reads a JSON config file over c. Returns 0, or -1 with a message in err. */
int push_config_load(push_config *c, const char *path, char *err,
                     size_t errlen);

void push_config_free(push_config *c);

/* Runs the server until SIGINT/SIGTERM; returns the process exit status. */
int push_server_main(push_config *c);

#endif
