/* redis.h - the Redis engine: several herald nodes as one server.
 *
 * Redis holds each channel's stream (a Redis stream trimmed to the
 * namespace's history_size, plus a small hash with its epoch and last
 * offset), presence and the node list; a Lua script publishes atomically
 * (offset, stream append and the sharded pub/sub message in one step), so
 * every node sees the same offsets in the same order. Each node keeps a
 * replica of the channels its clients use in its hub (push.h): it loads the
 * channel's position and history when its first local subscriber arrives,
 * then appends what pub/sub brings. Subscribes, recovery and history reads
 * are then answered from the replica, as in the memory engine.
 *
 * A gap in what pub/sub brings (a lost connection, a restarted Redis) is
 * repaired from the Redis stream before anything after it is delivered;
 * when the stream no longer holds what is missing, the channel's local
 * subscribers are told (on_lost) instead of being left with a silent hole.
 *
 * A channel's epoch belongs to one Redis data history: a server that may
 * have lost acknowledged publications (restarted without an fsync-always
 * append-only file, a replica promoted, a backup restored) gives the
 * channel a new epoch, so that no position is ever handed out twice and
 * none from before is recovered across publications that are gone
 * (docs/scaling.md, "Epochs and data loss in Redis").
 *
 * Everything runs on one libuv loop. hiredis provides the RESP reader and
 * the command formatter; the connections (TCP or TLS, reconnect with
 * backoff, health pings) are ours: see docs/design.md for why not hiredis'
 * own async layer.
 */
#ifndef HERALD_PUSH_REDIS_H
#define HERALD_PUSH_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "push/config.h"
#include "push/engine.h"
#include "push/push.h"

typedef struct push_redis push_redis;

/* The outcome of an asynchronous call, the callback and the events are
 * the engine interface's (engine.h): this is one of its engines. */
enum {
  PUSH_REDIS_OK = PUSH_ENGINE_OK,
  PUSH_REDIS_DOWN = PUSH_ENGINE_DOWN,
  PUSH_REDIS_ERROR = PUSH_ENGINE_ERROR
};
typedef push_engine_reply push_redis_reply;
typedef push_engine_cb push_redis_cb;
typedef push_engine_events push_redis_events;

/* Creates the engine and starts connecting. cfg is copied; hub must outlive
 * the engine. node: this node's name (unique among the nodes). Returns NULL
 * with a message in err (bad address, TLS setup, out of memory). */
push_redis *push_redis_new(uv_loop_t *loop, const push_redis_config *cfg,
                           push_hub *hub, const char *node,
                           const push_redis_events *ev, char *err,
                           size_t errlen);

/* Removes this node from the node list (best effort), closes everything.
 * Pending callbacks are called with PUSH_REDIS_DOWN first. */
void push_redis_del(push_redis *r);

/* 1 when every shard is connected and ready. */
int push_redis_healthy(const push_redis *r);

/*
 * Makes the hub's replica of channel current and keeps it so (one
 * reference; push_redis_release drops it). Returns 0 when it already is
 * (cb is not called), 1 when cb will be called once with the outcome (the
 * reference is kept only on PUSH_REDIS_OK), or PUSH_REDIS_DOWN.
 */
int push_redis_sync(push_redis *r, const char *channel, push_redis_cb cb,
                    void *ud);
void push_redis_release(push_redis *r, const char *channel);

/* Publishes a publication's tail (push_pub_tail). Returns 1 (cb will be
 * called with the position) or PUSH_REDIS_DOWN. */
int push_redis_publish(push_redis *r, const char *channel, const char *tail,
                       size_t len, push_redis_cb cb, void *ud);

/* push_redis_publish with an idempotency key: a key seen within window_s
 * answers the first publication's position with duplicate set. */
int push_redis_publish_idem(push_redis *r, const char *channel,
                            const char *tail, size_t len, const char *idem,
                            uint32_t window_s, push_redis_cb cb, void *ud);

/* Channel occupancy (engine.h, push_engine_occupancy): this node's first
 * subscriber came (1) or its last left (0); ev.on_occupancy is called when
 * that changed the cluster's state. Best effort. */
void push_redis_occupancy(push_redis *r, const char *channel, int occupied);

/* Sends msg to every node's ev.on_control (this one included: the server
 * skips its own). Returns 0 or PUSH_REDIS_DOWN. */
int push_redis_control(push_redis *r, const char *msg, size_t len);

/* Connections per user (engine.h, push_engine_user_add): cb gets status
 * and allowed. Returns 1 (cb will be called) or PUSH_REDIS_DOWN. */
int push_redis_user_add(push_redis *r, const char *user, const char *client,
                        uint32_t limit, push_redis_cb cb, void *ud);
void push_redis_user_remove(push_redis *r, const char *user,
                            const char *client);
void push_redis_user_refresh(push_redis *r, const char *user,
                             const char *client);

/* Presence. join: the join or leave push to send to the channel's
 * subscribers on every node when the entry appears or goes (NULL: none).
 * add also refreshes an entry's TTL. Return 0 or PUSH_REDIS_DOWN. */
int push_redis_presence_add(push_redis *r, const char *channel,
                            const char *client, const char *entry_json,
                            const push_buf *join);
int push_redis_presence_remove(push_redis *r, const char *channel,
                               const char *client, const push_buf *leave);
/* cb gets {"clients":{...}}. Returns 1 or PUSH_REDIS_DOWN. */
int push_redis_presence_get(push_redis *r, const char *channel,
                            push_redis_cb cb, void *ud);

/* cb gets [node, ...] of the live nodes. Returns 1 or PUSH_REDIS_DOWN. */
int push_redis_nodes(push_redis *r, push_redis_cb cb, void *ud);

/* Call once a second: heartbeats, health pings, idle channels. */
void push_redis_tick(push_redis *r, int64_t now_ms);

typedef struct push_redis_stats {
  size_t shards, shards_up;
  uint64_t reconnects, errors, resyncs, lost;
  /* Channels this node saw go back in Redis within one epoch (a restored
   * backup): it gave them a new epoch (docs/scaling.md). */
  uint64_t rollbacks;
  size_t channels;
} push_redis_stats;
void push_redis_get_stats(const push_redis *r, push_redis_stats *s);

#endif
