/* redis_int.h - what the Redis engine's two halves share: redis.c (shards,
 * scripts, presence, nodes, life cycle) and redis_chan.c (publishing, each
 * channel's replica and its state machine). Not an API: redis.h is.
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

typedef struct rshard rshard;
typedef struct rchan rchan;

/* A Redis address: a command connection and a pub/sub connection. */
struct rshard {
  push_redis *r;
  int index;
  char host[256], port[16];
  redis_conn cmd, sub;
  int up;
  int scripts_loaded;
  char sha[NSCRIPTS][41];
  uv_timer_t retry;
  uv_getaddrinfo_t gai;
  int resolving;
  uint32_t backoff_ms;
  int sharded; /* pub/sub flavour in use */
  int active;  /* connecting or connected: shard_down has work to do */
  /* What the server says of itself (INFO, CONFIG GET), read on each
   * connect: it names the data the channels' epochs describe. */
  char replid[41];    /* master_replid (run_id before Redis 4) */
  int loaded_durable; /* master, AOF on, not promoted from a replica */
  int fsync_always;   /* appendfsync always */
  char durable[2];    /* "1" when both hold, else "0": the scripts' dur */
};

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
  int overflow;
  uint64_t seen_off; /* the last publication applied (0: unknown)... */
  int64_t seen_ms;   /* ...and Redis' time for it */
  const push_ns *ns;
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
  size_t nshards;
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
rshard *redis_shard_of(push_redis *r, const char *channel);
/* TTL of a channel's meta hash (s; 0: none). */
uint32_t redis_meta_ttl(const push_ns *ns);
/* A fresh epoch, for a channel that turns out to be new. */
void redis_next_epoch(push_redis *r, char out[PUSH_EPOCH_MAX + 1]);
int64_t redis_wall_ms(void);
/* The shard a connection belongs to. */
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

/* ---- redis_ext.c: what the server needs of the cluster besides channels
 * (occupancy, control messages between nodes, connections per user) ---- */

/* Shard 0 is up: subscribe the control channel. */
void redis_ext_shard_up(rshard *sh);
/* A pub/sub message: returns 1 when it was a control message (taken). */
int redis_ext_message(rshard *sh, const char *key, size_t klen, const char *msg,
                      size_t len);
/* Once a second: refreshes this node's occupancy entries. */
void redis_ext_tick(push_redis *r, int64_t now_ms);

/* ---- redis_chan.c ---- */

rchan *redis_chan_find(push_redis *r, const char *name, size_t n);
void redis_chan_free(push_redis *r, rchan *ch);
/* The channel's shard is up again / went down. */
void redis_chan_shard_up(rchan *ch);
void redis_chan_shard_down(rchan *ch);
/* A pub/sub message of the shard's subscriber connection. */
void redis_chan_message(rshard *sh, const char *key, size_t klen,
                        const char *msg, size_t len);
/* Unsubscribes and forgets the channels nobody used for a while. */
void redis_chan_reap(push_redis *r, int64_t now_ms);

#endif
