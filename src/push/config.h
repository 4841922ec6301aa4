/* config.h - the configuration of `herald serve`: every key of
 * docs/config.md as a field, its defaults, and the JSON file reader
 * (config.c). Keep this file and docs/config.md in step. */
#ifndef HERALD_PUSH_CONFIG_H
#define HERALD_PUSH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "push/limits.h"
#include "push/log.h"
#include "push/push.h"
#include "push/pusher_config.h"

/* The Redis engine's settings ("redis" in docs/config.md). */
#define PUSH_REDIS_MAX_SHARDS 16
#define PUSH_REDIS_MAX_SENTINELS 8 /* per shard */
#define PUSH_REDIS_MAX_SEEDS 16    /* Redis Cluster seed nodes */

/* A shard whose master Redis Sentinel names ("redis.sentinel"). */
typedef struct push_redis_sentinel {
  char *master_name;                     /* as the sentinels monitor it */
  char *addrs[PUSH_REDIS_MAX_SENTINELS]; /* host:port of each sentinel */
  size_t naddrs;
  char *password; /* the sentinels' own requirepass, or NULL */
} push_redis_sentinel;

typedef struct push_redis_config {
  /* The shards, naddrs of them: each is addrs[i] (host:port) or, when
   * sentinel[i] is set (and addrs[i] NULL), the master its sentinels
   * name. Empty when cluster is set. */
  char *addrs[PUSH_REDIS_MAX_SHARDS];
  push_redis_sentinel *sentinel[PUSH_REDIS_MAX_SHARDS];
  size_t naddrs;
  /* Redis Cluster: seed nodes (host:port); the masters and their slots
   * come from the cluster itself. */
  char *cluster[PUSH_REDIS_MAX_SEEDS];
  size_t ncluster;
  char *user;               /* ACL user, or NULL */
  char *password;           /* AUTH, or NULL */
  char *prefix;             /* key prefix; NULL: "herald" */
  int tls;                  /* connect with TLS */
  char *tls_ca;             /* CA file; NULL: the system's */
  char *tls_server_name;    /* NULL: the host of each address */
  int tls_insecure;         /* do not verify the server */
  int sharded;              /* 1: SSUBSCRIBE/SPUBLISH, 0: SUBSCRIBE/PUBLISH */
  uint32_t presence_ttl_s;  /* presence entries live this long unrefreshed */
  uint32_t ping_timeout_ms; /* a connection silent this long is dropped */
  /* Set by the server, not configured: with several loops (threads), 1
   * for every loop but the first, which alone keeps the node's entry in
   * the node list. */
  int secondary;
} push_redis_config;

/* Events webhooks may announce (webhooks.events), as bits. */
enum {
  PUSH_WH_CONNECT = 1 << 0,
  PUSH_WH_DISCONNECT = 1 << 1,
  PUSH_WH_OCCUPIED = 1 << 2,
  PUSH_WH_VACATED = 1 << 3,
  PUSH_WH_JOIN = 1 << 4,
  PUSH_WH_LEAVE = 1 << 5,
  PUSH_WH_PUBLISH = 1 << 6
};

/* The application's backend (docs/backend.md): the proxy and webhooks. */
typedef struct push_backend_config {
  char *connect_url; /* NULL: no connect proxy */
  char *refresh_url;
  char *rpc_url;
  int connect_always;     /* ask even when the client sent a token */
  uint32_t timeout_ms;    /* per proxy request */
  uint32_t max_in_flight; /* proxy requests at once; past it: 113 */
  size_t max_response;    /* bytes of a proxy answer */
  char **headers;         /* request headers forwarded (names) */
  size_t nheaders;
  char *webhooks_url; /* NULL: no webhooks */
  char *webhooks_secret;
  unsigned webhooks_events; /* PUSH_WH_* */
  size_t webhooks_max_queue, webhooks_max_queue_bytes, webhooks_batch;
  uint32_t webhooks_timeout_ms;
} push_backend_config;

/* The most max_sse_channels may be: the event ids carry every channel's
 * position, and a Last-Event-ID must fit in one request head. */
#define PUSH_SSE_CHANNELS_MAX 256

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
  uint64_t max_history_bytes;  /* history kept in memory; 0: no limit */
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
  uint32_t max_sse_channels; /* channels on one SSE stream, 1..256 */
  uint32_t shutdown_grace_s;
  /* Loops (threads) serving clients; 0: one per core. Default 1. */
  uint32_t threads;
  int log_level;
  int demo; /* demo namespaces and the ticker publisher */
  char *tls_cert;
  char *tls_key;
  /* Scale-out: "engine": "redis" (docs/scaling.md). */
  int engine_redis;
  push_redis_config redis;
  char *node_name;           /* NULL: random */
  char *static_dir;          /* files served over plain HTTP GET; NULL: none */
  push_pusher_config pusher; /* Pusher Channels apps (docs/pusher.md) */
  push_backend_config backend;
  uint32_t refresh_ahead_s;       /* the refresh push, before exp */
  uint32_t user_connection_limit; /* per user, cluster-wide; 0: none */
  uint32_t idempotency_window_s;  /* idempotency_key honoured this long */
  uint32_t idempotency_max_keys;  /* memory engine: keys remembered */
} push_config;

/* Safe local defaults (docs/config.md). Returns 0 or -1 (out of memory). */
int push_config_defaults(push_config *c);

/* Reads a JSON config file over c. Returns 0, or -1 with a message in err. */
int push_config_load(push_config *c, const char *path, char *err,
                     size_t errlen);

void push_config_free(push_config *c);

/* ---- one setting at a time -------------------------------------------
 * For front ends that read settings from somewhere other than the JSON
 * file: the command line of `herald serve` (src/app/serve.c). Each function
 * checks its value as the JSON key of the same meaning does. Strings are
 * copied: the config owns its copies and push_config_free() frees them.
 * Every function that takes err returns 0, or -1 with a message in
 * err[0..errlen) and c as it was. */

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

/* Removes every Redis shard (addresses, sentinels, cluster seeds). */
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
/* threads from a flag's text: 0..PUSH_CONFIG_THREADS_MAX. Returns 0, or
 * -1 with a message in err. */
#define PUSH_CONFIG_THREADS_MAX 256
int push_config_set_threads(push_config *c, const char *value, char *err,
                            size_t errlen);
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
