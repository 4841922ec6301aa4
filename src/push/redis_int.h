/* redis_int.h - what the Redis engine's files share: redis.c (shards,
 * scripts, presence, nodes, life cycle), redis_chan.c (publishing, each
 * channel's replica and its state machine), redis_sentinel.c (shards whose
 * master Redis Sentinel names) and redis_cluster.c (Redis Cluster: the
 * slot map, MOVED and ASK). Not an API: redis.h is.
 */
#ifndef HERALD_PUSH_REDIS_INT_H
#define HERALD_PUSH_REDIS_INT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "push/push.h"
#include "push/redis.h"
#include "push/redis_conn.h"

/* The scripts (redis.c), by index into rshard.sha. */
enum {
  S_PUBLISH,
  S_LOAD,
  S_PADD,
  S_PREMOVE,
  S_PGET,
  S_BEAT,
  S_NODES,
  S_FENCE,
  S_PUBLISH_IDEM,
  S_OCCUPANCY,
  S_USER,
  NSCRIPTS
};

/* The scripts' Lua source, by the enum above (redis_scripts.c); each shard
 * loads them all (SCRIPT LOAD) and calls them by their SHA-1. */
extern const char *const redis_scripts[NSCRIPTS];

typedef struct rshard rshard;
typedef struct rchan rchan;
typedef struct rsentinel rsentinel;
typedef struct rcluster rcluster;

/* Resolves host:port, then starts up to two connections to it. One
 * request at a time: a start while one runs makes it start over once it
 * is back (the address may have changed). */
typedef struct rdial {
  push_redis *r;
  uv_getaddrinfo_t gai;
  redis_conn *conn[2]; /* conn[1] may be NULL */
  char host[256], port[16];
  int busy; /* a request is out */
  int want; /* start the connections when it is back */
  int redo; /* resolve again when it is back */
} rdial;

void redis_dial_init(rdial *d, push_redis *r, redis_conn *a, redis_conn *b);
/* Sets the address and starts; a failure is reported as conn[0]'s. */
void redis_dial_start(rdial *d, const char *host, const char *port);
/* What is under way will not start the connections. */
void redis_dial_cancel(rdial *d);
/* At shutdown: cancels the request (its callback still runs). */
void redis_dial_close(rdial *d);

/* "host:port" (or "[v6]:port"; port 6379 when absent) into its parts.
 * Returns 0 or -1. */
int redis_split_addr(const char *a, char *host, size_t hcap, char *port,
                     size_t pcap);

/* How a shard finds its server. */
typedef enum {
  SH_ADDRESS,  /* a fixed host:port (redis.addresses) */
  SH_SENTINEL, /* the master that sentinels name (redis.sentinel) */
  SH_CLUSTER   /* a master of a Redis Cluster's slot map (redis.cluster) */
} rshard_kind;

/* A Redis server: a command connection and a pub/sub connection. */
struct rshard {
  push_redis *r;
  int index;
  rshard_kind kind;
  int in_use;               /* cluster: a master of the map; else always */
  char host[256], port[16]; /* the server it uses now */
  redis_conn cmd, sub;
  int up;
  int scripts_loaded;
  int role_ok; /* ROLE answered "master" on this connection */
  char sha[NSCRIPTS][41];
  uv_timer_t retry;
  rdial dial;
  uint32_t backoff_ms;
  int sharded;   /* pub/sub flavour in use */
  int active;    /* connecting or connected: shard_down has work to do */
  rsentinel *sn; /* SH_SENTINEL: the sentinels and what they said */
  size_t nslots; /* SH_CLUSTER: slots it serves in the map */
  /* What the server says of itself (INFO, CONFIG GET), read on each
   * connect: it names the data the channels' epochs describe. */
  char replid[41];    /* master_replid (run_id before Redis 4) */
  int loaded_durable; /* master, AOF on, not promoted from a replica */
  int fsync_always;   /* appendfsync always */
  char durable[2];    /* "1" when both hold, else "0": the scripts' dur */
};

/* The cluster's masters this node can follow at once (slot map owners,
 * old ones included until they are retired). */
#define REDIS_CLUSTER_MAX_MASTERS 64
#define REDIS_NSLOTS 16384

typedef enum { CH_IDLE, CH_SUBSCRIBING, CH_LOADING, CH_LIVE } rchan_state;

typedef struct waiter {
  push_redis_cb cb;
  void *ud;
  struct waiter *next;
} waiter;

/* A pub/sub message held while its channel loads. */
typedef struct rmsg {
  char epoch[PUSH_EPOCH_MAX + 1];
  push_ext_pub e;
  char *copy; /* owns e.tail */
} rmsg;

struct rchan {
  struct rchan *next; /* hash chain */
  uint32_t hash;
  rshard *sh;
  rchan_state state;
  size_t refs;
  unsigned inflight; /* commands whose reply names this channel */
  int64_t idle_since;
  int reload; /* load again when this one ends */
  waiter *waiters, **wtail;
  rmsg *buf;
  size_t nbuf, capbuf;
  /* The first `covered` buffered messages arrived before the load in
   * flight was sent: Redis ran that load after publishing them, so its
   * answer includes them (redis_chan.c, chan_apply_buffer). */
  size_t covered;
  int overflow;
  uint64_t seen_off; /* the last publication applied (0: unknown)... */
  int64_t seen_ms;   /* ...and Redis' time for it */
  const push_ns *ns;
  uint16_t slot; /* its Redis Cluster hash slot */
  int occupied;  /* this node said it has subscribers (occupancy) */
  char name[];
};

struct push_redis {
  push_redis_config cfg;
  uv_loop_t *loop;
  push_hub *hub;
  push_redis_events ev;
  char node[64];
  char prefix[64];
  rshard *shards;
  size_t nshards; /* entries of shards (cluster: some not in_use) */
  rcluster *cl;   /* Redis Cluster, or NULL */
  rchan **buckets;
  size_t nbuckets, nchans;
  uint64_t hkey[2];
  SSL_CTX *ssl_ctx;
  char epoch_base[9];
  uint64_t epoch_seq;
  int closing;
  unsigned open_handles; /* freed when the last close callback ran */
  push_buf scratch;
  push_redis_stats st;
  int occupancy_on; /* this node announces channel occupancy */
  int64_t occupancy_refreshed_ms;
};

#define KEY_MAX (64 + PUSH_CHANNEL_MAX + 8)

/* A channel's keys (docs/scaling.md): prefix.{channel} is its pub/sub
 * channel, and with a suffix its stream (.s), meta hash (.m) and presence
 * hash and zset (.p, .z). The braces are a Redis Cluster hash tag, so a
 * channel's keys would also stay together in a cluster. */
typedef struct ckeys {
  char ps[KEY_MAX], s[KEY_MAX], m[KEY_MAX], p[KEY_MAX], z[KEY_MAX];
  size_t len;  /* of ps; the others are one... */
  size_t slen; /* ...or two characters longer (s, m, p, z: len + 2) */
} ckeys;

/* ---- redis.c ---- */

void redis_ckeys(const push_redis *r, const char *channel, ckeys *k);
/* The shard that holds a channel: NULL when a cluster's map does not
 * say yet. */
rshard *redis_shard_of(push_redis *r, const char *channel);
/* Connects a shard to host:port (SH_SENTINEL: once its sentinels named
 * it). */
void redis_shard_dial(rshard *sh);
/* Takes a shard down (its connections close, its calls fail with
 * PUSH_REDIS_DOWN) and reconnects after a backoff; now: at once. */
void redis_shard_down(rshard *sh, const char *why);
void redis_shard_reconnect_now(rshard *sh, const char *why);
/* Starts connecting a cluster master that joined the map. */
void redis_shard_start(rshard *sh);
/* Takes a shard down for good (a cluster master that lost its slots). */
void redis_shard_retire(rshard *sh);
/* Frees the engine once it is closing and its last handle closed. */
void redis_maybe_free(push_redis *r);
/* AUTH with the configured credentials, if any, on a new connection. */
void redis_send_auth(push_redis *r, redis_conn *c, const char *user,
                     const char *password);
/* The shard of a command or pub/sub connection. */
/* TTL of a channel's meta hash (s; 0: none). */
uint32_t redis_meta_ttl(const push_ns *ns);
/* A fresh epoch, for a channel that turns out to be new. */
void redis_next_epoch(push_redis *r, char out[PUSH_EPOCH_MAX + 1]);
int64_t redis_wall_ms(void);
static inline rshard *conn_shard(const redis_conn *c) {
  return c->owner;
}
/* The push_redis_cb a command carries (see redis_cmd). */
static inline push_redis_cb pending_cb(const redis_pending *p) {
  return (push_redis_cb)p->cb;
}
/* Sends a command on c, with pending.cb set to a push_redis_cb. */
int redis_cmd(redis_conn *c, redis_reply_fn fn, push_redis_cb cb, void *ud,
              int argc, const char **argv, const size_t *lens);
/* A reply nobody waits for: errors are logged. */
void redis_on_ignored(redis_conn *c, redisReply *reply, const redis_pending *p);

/* The shard that keeps the node list and carries the control channel:
 * the first one, or in a Redis Cluster the master of {prefix.nodes}'s
 * slot. NULL when a cluster's map does not say yet. */
rshard *redis_nodes_shard(push_redis *r);

/* ---- redis_shard.c: a shard's life ---- */

/* Resolves the shard's server and connects both its connections. */
void redis_shard_connect(rshard *sh);
/* Closes both connections (why goes to the log); pending calls are
 * answered PUSH_REDIS_DOWN. */
void redis_shard_close(rshard *sh, const char *why);
/* Sends ROLE on the command connection: a shard that is not a master any
 * more goes down. */
void redis_send_role(rshard *sh);
/* The connection callbacks of a shard's connections (a Redis Cluster's
 * first shard uses the second). */
extern const redis_conn_events redis_shard_conn_events;
extern const redis_conn_events redis_shard_cluster_events;

/* ---- redis.c, for redis_shard.c ---- */

/* Writes this node's entry into the node list now. */
void redis_heartbeat(push_redis *r);

/* ---- redis_ext.c: what the server needs of the cluster besides channels
 * (occupancy, control messages between nodes, connections per user) ---- */

/* Shard 0 is up: subscribe the control channel. */
void redis_ext_shard_up(rshard *sh);
/* A pub/sub message: returns 1 when it was a control message (taken). */
int redis_ext_message(rshard *sh, const char *key, size_t klen, const char *msg,
                      size_t len);
/* Once a second: refreshes this node's occupancy entries. */
void redis_ext_tick(push_redis *r, int64_t now_ms);

/* An error reply that says "not now, or not here" rather than "no":
 * the call is answered PUSH_REDIS_DOWN (temporary) and retried later. */
int redis_error_transient(const redisReply *reply);

/* ---- redis_chan.c ---- */

rchan *redis_chan_find(push_redis *r, const char *name, size_t n);
void redis_chan_free(push_redis *r, rchan *ch);
/* The channel's shard is up again / went down. */
void redis_chan_shard_up(rchan *ch);
void redis_chan_shard_down(rchan *ch);
/* The channel lives on another shard now (Redis Cluster): it follows
 * there, resynchronizing as after a reconnect. */
void redis_chan_move(rchan *ch, rshard *to);
/* A pub/sub message of the shard's subscriber connection. */
void redis_chan_message(rshard *sh, const char *key, size_t klen,
                        const char *msg, size_t len);
/* The server ended the shard's subscription to key. */
void redis_chan_unsubscribed(rshard *sh, const char *key, size_t klen);
/* Unsubscribes and forgets the channels nobody used for a while, and
 * subscribes again those an error left behind. */
void redis_chan_reap(push_redis *r, int64_t now_ms);
/* 1 for the reply functions of a channel's own commands (subscribe,
 * load, fence), which the channel reissues itself when it moves. */
int redis_chan_reply_fn(redis_reply_fn fn);

/* ---- redis_sentinel.c ---- */

/* Sets up a shard whose master cfg's sentinels name. Returns 0, or -1
 * with a message in err. */
int redis_sentinel_new(rshard *sh, const push_redis_sentinel *cfg, char *err,
                       size_t errlen);
/* Asks the sentinels for the master, then redis_shard_dial (or
 * redis_shard_down when none answers). */
void redis_sentinel_resolve(rshard *sh);
/* The shard went down: stops asking. */
void redis_sentinel_stop(rshard *sh);
/* Once a second: keeps a subscription to +switch-master on one sentinel. */
void redis_sentinel_tick(rshard *sh, int64_t now_ms);
/* At shutdown: closes everything (handles counted in open_handles). */
void redis_sentinel_close(rshard *sh);
void redis_sentinel_free(rshard *sh);
/* The master's name a sentinel shard asks for, else NULL. */
const char *redis_sentinel_master_name(const rshard *sh);

/* ---- redis_cluster.c ---- */

/* Sets up the cluster state with its seed nodes. Returns 0, or -1 with a
 * message in err. */
int redis_cluster_new(push_redis *r, char *const *seeds, size_t nseeds,
                      char *err, size_t errlen);
/* Starts reading the slot map. */
void redis_cluster_start(push_redis *r);
/* Redis Cluster's hash slot of a channel's keys (CRC16 of the hash tag,
 * which is the channel name), and of the node list's keys. */
uint16_t redis_cluster_slot(const char *tag, size_t n);
/* The master that serves slot, or NULL. */
rshard *redis_cluster_owner(const push_redis *r, uint16_t slot);
/* 1 when every slot has a master in the map. */
int redis_cluster_complete(const push_redis *r);
/* Reads the map again soon (a shard failed, a master is a replica now,
 * a MOVED). */
void redis_cluster_refresh(push_redis *r);
/* An error reply of sh's: a MOVED updates the map at once. Returns 1 when
 * it did. */
int redis_cluster_moved(rshard *sh, const redisReply *reply);
/* The redirect hook of a cluster shard's command connection (MOVED and
 * ASK: see redis_conn_events). */
int redis_cluster_redirect(redis_conn *c, const redisReply *reply,
                           const redis_pending *p, const char *raw, size_t len);
/* Once a second: the map is read again every few seconds. */
void redis_cluster_tick(push_redis *r, int64_t now_ms);
void redis_cluster_close(push_redis *r);
void redis_cluster_free(push_redis *r);

#endif
