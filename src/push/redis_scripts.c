/*
 * redis_scripts.c - the Redis engine's Lua scripts: publishing (plain and
 * idempotent), loading a channel, the rollback fence, presence, the node
 * list, channel occupancy and connections per user. Each runs atomically
 * on one shard and touches only the keys it is given (one hash tag, so that
 * a Redis Cluster accepts it). Keys and arguments are described above each
 * script; docs/scaling.md lists the keys.
 */
#include "push/redis_int.h"

/* Milliseconds of Redis' own clock: one clock for every node. */
#define LUA_NOW                                                                \
  "local t = redis.call('TIME') "                                              \
  "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* A channel's epoch names the data it describes (docs/scaling.md, "Epochs
 * and data loss in Redis"). The meta hash records the replication ID of
 * the server that last wrote it (r) and whether that server acknowledged
 * writes only once they were on disk (d). A script running on another
 * server (restarted, or a replica promoted) keeps the epoch only when
 * nothing can have been lost: the old server was durable and the new one
 * loaded that durable file. Otherwise it starts a new epoch, keeping the
 * offsets and the stream: positions handed out before can then never
 * match one handed out after, whatever the server forgot.
 *
 * Expects the locals cand (an epoch for a new or restarted stream), rid
 * (this server's replication ID) and dur ('1': durable, see shard_durable).
 * Leaves the epoch in e; fresh: the meta hash was created; set: it was
 * written. A new meta means a new stream: any old one (its meta expired
 * or was deleted) is dropped so stream IDs restart. */
#define LUA_EPOCH                                                              \
  "local m = redis.call('HMGET', KEYS[2], 'e', 'r', 'd') "                     \
  "local e, fresh, set = m[1], false, true "                                   \
  "if not e then "                                                             \
  "  e, fresh = cand, true "                                                   \
  "  redis.call('DEL', KEYS[1]) "                                              \
  "  redis.call('HSET', KEYS[2], 'e', e, 'r', rid, 'd', dur) "                 \
  "elseif m[2] ~= rid then "                                                   \
  "  if m[3] ~= '1' or dur ~= '1' then e = cand end "                          \
  "  redis.call('HSET', KEYS[2], 'e', e, 'r', rid, 'd', dur) "                 \
  "elseif m[3] == '1' and dur ~= '1' then "                                    \
  "  redis.call('HSET', KEYS[2], 'd', dur) "                                   \
  "else set = false end "

/* KEYS: stream, meta. ARGV: pubsub channel, tail, history size, history
 * ttl (s), epoch if new, meta ttl (s, 0: none), publish command,
 * replication ID, durable. Returns {offset, epoch}. */
#define LUA_PUBLISH_BODY                                                       \
  "local cand, rid, dur = ARGV[5], ARGV[8], ARGV[9] " LUA_EPOCH                \
  "local o = redis.call('HINCRBY', KEYS[2], 'o', 1) "                          \
  "local n = tonumber(ARGV[3]) "                                               \
  "if n > 0 then "                                                             \
  "  redis.call('XADD', KEYS[1], 'MAXLEN', n, o .. '-0', 't', now, 'p', "      \
  "ARGV[2]) "                                                                  \
  "  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) "    \
  "end "                                                                       \
  "end "                                                                       \
  "if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[6]) end "  \
  "redis.call(ARGV[7], ARGV[1], 'p' .. o .. ' ' .. e .. ' ' .. now .. ' ' "    \
  ".. ARGV[2]) "

static const char lua_publish[] = LUA_NOW LUA_PUBLISH_BODY "return {o, e}";

/* An idempotent publish: lua_publish with KEYS[3], the idempotency key
 * (prefix.{channel}.i.<key>), and ARGV[10], its window (ms). A key seen
 * within the window answers the first publication's position and
 * publishes nothing: {offset, epoch, 1}; else {offset, epoch, 0}. */
static const char lua_publish_idem[] =
    LUA_NOW "local prev = redis.call('GET', KEYS[3]) "
            "if prev then "
            "  local sp = string.find(prev, ' ', 1, true) "
            "  return {tonumber(string.sub(prev, 1, sp - 1)), "
            "string.sub(prev, sp + 1), 1} "
            "end " LUA_PUBLISH_BODY
            "redis.call('SET', KEYS[3], o .. ' ' .. e, 'PX', ARGV[10]) "
            "return {o, e, 0}";

/* KEYS: a channel's zset of nodes with subscribers (.o). ARGV: node,
 * 1 (occupied) or 0 (vacated), ttl (ms). Returns 1 when this call changed
 * the channel's state in the cluster: the first node in, or the last one
 * out (entries of nodes that stopped refreshing them expire). */
static const char lua_occupancy[] = LUA_NOW
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "if ARGV[2] == '1' then "
    "  local before = redis.call('ZCARD', KEYS[1]) "
    "  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) "
    "  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3])) "
    "  if before == 0 then return 1 end return 0 "
    "end "
    "local had = redis.call('ZREM', KEYS[1], ARGV[1]) "
    "if had == 1 and redis.call('ZCARD', KEYS[1]) == 0 then return 1 end "
    "return 0";

/* KEYS: a user's zset of connections (prefix.u.{user}). ARGV: client,
 * limit, ttl (ms), refresh ('1': only refresh an entry that exists).
 * Returns 1 when the client is counted, 0 when the user has limit
 * connections already. */
static const char lua_user[] = LUA_NOW
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "local exp = now + tonumber(ARGV[3]) "
    "if ARGV[4] == '1' or redis.call('ZSCORE', KEYS[1], ARGV[1]) then "
    "  redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[1]) "
    "  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3])) "
    "  return 1 "
    "end "
    "if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end "
    "redis.call('ZADD', KEYS[1], exp, ARGV[1]) "
    "redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3])) "
    "return 1";

/* KEYS: stream, meta. ARGV: count, epoch if new, meta ttl, replication
 * ID, durable. Returns {epoch, offset, XREVRANGE entries}. */
static const char lua_load[] =
    "local cand, rid, dur = ARGV[2], ARGV[4], ARGV[5] " LUA_EPOCH
    "if fresh then redis.call('HSET', KEYS[2], 'o', 0) end "
    "if set and tonumber(ARGV[3]) > 0 then "
    "  redis.call('EXPIRE', KEYS[2], ARGV[3]) end "
    "local o = tonumber(redis.call('HGET', KEYS[2], 'o') or '0') "
    "local items = {} "
    "if tonumber(ARGV[1]) > 0 then "
    "  items = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1]) "
    "end "
    "return {e, o, items}";

/* KEYS: meta. ARGV: an epoch a node saw rolled back, a new one. A node
 * whose replica is ahead of Redis, or whose last publication Redis now
 * holds with another time, saw data go back without the server changing
 * names (a restored backup): the epoch must change for everyone. Only
 * the first node to notice changes it. */
static const char lua_fence[] =
    "if redis.call('HGET', KEYS[1], 'e') == ARGV[1] then "
    "  redis.call('HSET', KEYS[1], 'e', ARGV[2]) end "
    "return 1";

/* The presence scripts take KEYS hash, zset and ARGV pubsub channel,
 * publish command first (presence_script), then their own arguments. */

/* ARGV 3..: client, entry, ttl (ms), join push or ''. Returns 1 if the
 * entry is new. */
static const char lua_presence_add[] =
    LUA_NOW "local new = redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) "
            "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[3]) "
            "redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[5])) "
            "redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[5])) "
            "if new == 1 and ARGV[6] ~= '' then "
            "  redis.call(ARGV[2], ARGV[1], 'j' .. ARGV[6]) end "
            "return new";

/* ARGV 3..: client, leave push or ''. */
static const char lua_presence_remove[] =
    "local had = redis.call('HDEL', KEYS[1], ARGV[3]) "
    "redis.call('ZREM', KEYS[2], ARGV[3]) "
    "if had == 1 and ARGV[4] ~= '' then "
    "  redis.call(ARGV[2], ARGV[1], 'j' .. ARGV[4]) end "
    "return had";

/* KEYS: hash, zset. Drops expired entries (their node stopped refreshing
 * them), returns HGETALL. */
static const char lua_presence_get[] = LUA_NOW
    "local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now) "
    "for _, c in ipairs(old) do redis.call('HDEL', KEYS[1], c) end "
    "if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) "
    "end "
    "return redis.call('HGETALL', KEYS[1])";

/* KEYS: nodes hash, nodes zset. ARGV: node, entry, ttl (ms). */
static const char lua_node_beat[] =
    LUA_NOW "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
            "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1]) "
            "return 1";

/* KEYS: nodes hash, nodes zset. Returns the live nodes' entries. */
static const char lua_node_list[] = LUA_NOW
    "local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now) "
    "for _, n in ipairs(old) do redis.call('HDEL', KEYS[1], n) end "
    "if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) "
    "end "
    "local live = redis.call('ZRANGE', KEYS[2], 0, -1) "
    "if #live == 0 then return {} end "
    "return redis.call('HMGET', KEYS[1], unpack(live))";

const char *const redis_scripts[NSCRIPTS] = {
    lua_publish,      lua_load,      lua_presence_add, lua_presence_remove,
    lua_presence_get, lua_node_beat, lua_node_list,    lua_fence,
    lua_publish_idem, lua_occupancy, lua_user};
