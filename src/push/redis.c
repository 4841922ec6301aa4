/*
 * redis.c - the Redis engine (redis.h has the model).
 *
 * Three layers, bottom up:
 *
 * Connections (rconn). A nonblocking socket watched by a uv_poll handle,
 * optionally wrapped in OpenSSL (SSL_set_fd), with a RESP reader from
 * hiredis and a FIFO of reply callbacks: Redis answers in order, so the
 * n-th reply belongs to the n-th command. Commands are appended to an
 * output buffer and written when the socket is writable, so every command
 * issued in one loop pass leaves in one write. The only unsolicited replies
 * are pub/sub messages on the subscriber connection, recognised by their
 * first element.
 *
 * Shards (rshard). Each Redis address is a shard with two connections: one
 * for commands and scripts, one for pub/sub. A shard is up when both are
 * connected, authenticated and the scripts are loaded. Any failure (an
 * error, EOF, or a health PING unanswered for ping_timeout_ms) takes the
 * whole shard down: both connections close, every pending callback is
 * called with PUSH_REDIS_DOWN, and a timer reconnects with exponential
 * backoff and jitter. When the shard is up again, every channel still in
 * use is subscribed and resynchronized (below).
 *
 * Channels (rchan). A channel is used by a node while it has local
 * references (subscribers, reads in flight). Its state machine:
 *
 *   IDLE --sync--> SUBSCRIBING --confirmed--> LOADING --loaded--> LIVE
 *     ^                                          ^                  |
 *     |                                          +---- a gap -------+
 *     +------------- shard down (from any state) ------------------+
 *
 * LOADING reads the channel's epoch, offset and history in one script and
 * loads them into the hub. Messages that arrive meanwhile are buffered and
 * applied after it, skipping what the load already had. When the hub's
 * replica has subscribers (a resync after a gap or a reconnect), what they
 * missed is delivered from the loaded history first; if the history no
 * longer holds it, or the epoch changed, on_lost tells the server.
 *
 * Channels are placed on shards by jump consistent hashing of the channel
 * name, so every node agrees and adding a shard moves only 1/n of them.
 */
#include "push/redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "push/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CHANNEL_LINGER_MS                                                      \
  5000                       /* an unused channel stays subscribed this long */
#define MSG_BUFFER_MAX 10000 /* messages buffered while a channel loads */
#define NODE_TTL_MS 10000    /* a node missing heartbeats this long is gone */

/* ------------------------------------------------------------------------ */
/* Scripts                                                                  */
/* ------------------------------------------------------------------------ */

/* Milliseconds of Redis' own clock: one clock for every node. */
#define LUA_NOW                                                                \
  "local t = redis.call('TIME') "                                              \
  "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* KEYS: stream, meta. ARGV: pubsub channel, tail, history size, history
 * ttl (s), epoch if new, meta ttl (s, 0: none), publish command.
 * Returns {offset, epoch}. A new meta means a new stream: any old one (its
 * meta expired or was deleted) is dropped so stream IDs restart. */
static const char lua_publish[] = LUA_NOW
    "local e = redis.call('HGET', KEYS[2], 'e') "
    "if not e then e = ARGV[5] redis.call('DEL', KEYS[1]) "
    "  redis.call('HSET', KEYS[2], 'e', e) end "
    "local o = redis.call('HINCRBY', KEYS[2], 'o', 1) "
    "local n = tonumber(ARGV[3]) "
    "if n > 0 then "
    "  redis.call('XADD', KEYS[1], 'MAXLEN', n, o .. '-0', 't', now, 'p', "
    "ARGV[2]) "
    "  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) "
    "end "
    "end "
    "if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[6]) end "
    "redis.call(ARGV[7], ARGV[1], 'p' .. o .. ' ' .. e .. ' ' .. now .. ' ' "
    ".. ARGV[2]) "
    "return {o, e}";

/* KEYS: stream, meta. ARGV: count, epoch if new, meta ttl.
 * Returns {epoch, offset, XREVRANGE entries}. */
static const char lua_load[] =
    "local e = redis.call('HGET', KEYS[2], 'e') "
    "if not e then e = ARGV[2] redis.call('DEL', KEYS[1]) "
    "  redis.call('HSET', KEYS[2], 'e', e, 'o', 0) "
    "  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) "
    "end "
    "end "
    "local o = tonumber(redis.call('HGET', KEYS[2], 'o') or '0') "
    "local items = {} "
    "if tonumber(ARGV[1]) > 0 then "
    "  items = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1]) "
    "end "
    "return {e, o, items}";

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

enum {
  S_PUBLISH,
  S_LOAD,
  S_PADD,
  S_PREMOVE,
  S_PGET,
  S_BEAT,
  S_NODES,
  NSCRIPTS
};
static const char *const scripts[NSCRIPTS] = {
    lua_publish,      lua_load,      lua_presence_add, lua_presence_remove,
    lua_presence_get, lua_node_beat, lua_node_list};

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct rshard rshard;
typedef struct rconn rconn;

typedef struct pending pending;

/* A reply callback; reply is NULL when the connection went down first. */
typedef void (*reply_fn)(rconn *c, redisReply *reply, const pending *p);

/* What to do with one reply: fn, and for the API's calls the caller's
 * callback (cb, ud), carried here so that a call costs no allocation. */
struct pending {
  reply_fn fn;
  push_redis_cb cb;
  void *ud;
};

typedef enum {
  RC_DOWN,
  RC_CONNECTING,
  RC_TLS, /* TLS handshake */
  RC_UP
} rconn_state;

struct rconn {
  rshard *sh;
  int is_sub;
  rconn_state state;
  int fd;
  uv_poll_t *poll;
  int events; /* UV_READABLE | UV_WRITABLE being watched */
  SSL *ssl;
  redisReader *reader;
  push_buf out;
  size_t out_off;
  pending *q; /* ring: qlen callbacks from qhead */
  size_t qhead, qlen, qcap;
  int64_t ping_sent_ms; /* 0: none outstanding */
};

struct rshard {
  push_redis *r;
  int index;
  char host[256], port[16];
  rconn cmd, sub;
  int up;
  int scripts_loaded;
  char sha[NSCRIPTS][41];
  uv_timer_t retry;
  uv_getaddrinfo_t gai;
  int resolving;
  uint32_t backoff_ms;
  int sharded; /* pub/sub flavour in use */
  int active;  /* connecting or connected: shard_down has work to do */
};

typedef enum { CH_IDLE, CH_SUBSCRIBING, CH_LOADING, CH_LIVE } rchan_state;

typedef struct waiter {
  push_redis_cb cb;
  void *ud;
  struct waiter *next;
} waiter;

typedef struct rmsg {
  char epoch[PUSH_EPOCH_MAX + 1];
  push_ext_pub e;
  char *copy; /* owns e.tail */
} rmsg;

typedef struct rchan {
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
  const push_ns *ns;
  char name[];
} rchan;

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
};

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void shard_down(rshard *sh, const char *why);
static void conn_on_poll(uv_poll_t *h, int status, int events);
static void conn_dispatch(rconn *c, redisReply *reply);
static void conn_ready(rconn *c);
static void redis_maybe_free(push_redis *r);

static void on_handle_closed(uv_handle_t *h) {
  push_redis *r = h->data;
  free(h);
  r->open_handles--;
  redis_maybe_free(r);
}

static void conn_watch(rconn *c, int events) {
  if (c->poll != NULL && events != c->events) {
    c->events = events;
    uv_poll_start(c->poll, events, conn_on_poll);
  }
}

/* Closes the socket and fails every pending callback. */
static void conn_close(rconn *c) {
  if (c->poll != NULL) {
    uv_poll_stop(c->poll);
    c->poll->data = c->sh->r;
    uv_close((uv_handle_t *)c->poll, on_handle_closed);
    c->poll = NULL;
  }
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  if (c->reader != NULL) {
    redisReaderFree(c->reader);
    c->reader = NULL;
  }
  c->state = RC_DOWN;
  c->out.len = 0;
  c->out_off = 0;
  c->ping_sent_ms = 0;
  c->events = 0;
  /* Callbacks may issue commands (they fail: the state is DOWN). */
  while (c->qlen > 0) {
    pending p = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    p.fn(c, NULL, &p);
  }
  c->qhead = 0;
}

static int queue_push(rconn *c, reply_fn fn, push_redis_cb cb, void *ud) {
  if (c->qlen == c->qcap) {
    size_t ncap = c->qcap ? c->qcap * 2 : 64;
    pending *n = malloc(ncap * sizeof *n);
    if (n == NULL) {
      return -1;
    }
    for (size_t i = 0; i < c->qlen; i++) {
      n[i] = c->q[(c->qhead + i) % c->qcap];
    }
    free(c->q);
    c->q = n;
    c->qcap = ncap;
    c->qhead = 0;
  }
  c->q[(c->qhead + c->qlen) % c->qcap] = (pending){fn, cb, ud};
  c->qlen++;
  return 0;
}

/* Queues a command, written in RESP straight into the output buffer (no
 * intermediate allocation: this is every publish's path); fn gets its reply
 * with cb and ud. Returns 0, or -1 when the connection is not up or memory
 * ran out (nothing queued, fn is not called). */
static int conn_cmd_cb(rconn *c, reply_fn fn, push_redis_cb cb, void *ud,
                       int argc, const char **argv, const size_t *lens) {
  if (c->state != RC_UP) {
    return -1;
  }
  push_buf *b = &c->out;
  size_t len0 = b->len;
  char head[32];
  int n = snprintf(head, sizeof head, "*%d\r\n", argc);
  int rv = push_buf_raw(b, head, (size_t)n);
  for (int i = 0; i < argc && rv == 0; i++) {
    n = snprintf(head, sizeof head, "$%zu\r\n", lens[i]);
    rv = push_buf_raw(b, head, (size_t)n) ||
         push_buf_raw(b, argv[i], lens[i]) || push_buf_raw(b, "\r\n", 2);
  }
  if (rv != 0 || queue_push(c, fn, cb, ud) != 0) {
    b->len = len0;
    return -1;
  }
  conn_watch(c, UV_READABLE | UV_WRITABLE);
  return 0;
}

static int conn_cmd(rconn *c, reply_fn fn, void *ud, int argc,
                    const char **argv, const size_t *lens) {
  return conn_cmd_cb(c, fn, NULL, ud, argc, argv, lens);
}

static void conn_fail(rconn *c, const char *why) {
  shard_down(c->sh, why);
}

static void conn_flush(rconn *c) {
  while (c->out_off < c->out.len) {
    size_t n = c->out.len - c->out_off;
    ssize_t w;
    if (c->ssl != NULL) {
      int k = SSL_write(c->ssl, c->out.p + c->out_off,
                        n > INT32_MAX ? INT32_MAX : (int)n);
      if (k <= 0) {
        int e = SSL_get_error(c->ssl, k);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
          return;
        }
        conn_fail(c, "TLS write failed");
        return;
      }
      w = k;
    } else {
      w = send(c->fd, c->out.p + c->out_off, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) {
          return;
        }
        conn_fail(c, strerror(errno));
        return;
      }
    }
    c->out_off += (size_t)w;
  }
  c->out_off = 0;
  push_buf_done(&c->out, 1 << 20);
  conn_watch(c, UV_READABLE);
}

static void conn_read(rconn *c) {
  static char buf[65536];
  for (;;) {
    ssize_t n;
    if (c->ssl != NULL) {
      int k = SSL_read(c->ssl, buf, sizeof buf);
      if (k <= 0) {
        int e = SSL_get_error(c->ssl, k);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
          return;
        }
        conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "closed by Redis"
                                                : "TLS read failed");
        return;
      }
      n = k;
    } else {
      n = recv(c->fd, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
          return;
        }
        conn_fail(c, strerror(errno));
        return;
      }
      if (n == 0) {
        conn_fail(c, "closed by Redis");
        return;
      }
    }
    if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
      conn_fail(c, "out of memory");
      return;
    }
    for (;;) {
      void *reply = NULL;
      if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
        conn_fail(c, "protocol error");
        return;
      }
      if (reply == NULL) {
        break;
      }
      conn_dispatch(c, reply);
      freeReplyObject(reply);
      if (c->state != RC_UP) {
        return; /* the shard went down in a callback */
      }
    }
    if ((size_t)n < sizeof buf && c->ssl == NULL) {
      return;
    }
  }
}

static void conn_tls_step(rconn *c) {
  int k = SSL_connect(c->ssl);
  if (k == 1) {
    conn_ready(c);
    return;
  }
  int e = SSL_get_error(c->ssl, k);
  if (e == SSL_ERROR_WANT_READ) {
    conn_watch(c, UV_READABLE);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    conn_watch(c, UV_WRITABLE);
  } else {
    char why[256];
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK) {
      snprintf(why, sizeof why, "TLS: %s", X509_verify_cert_error_string(v));
    } else {
      unsigned long err = ERR_get_error();
      snprintf(why, sizeof why, "TLS handshake failed: %s",
               err ? ERR_reason_error_string(err) : "connection closed");
    }
    ERR_clear_error();
    conn_fail(c, why);
  }
}

static void conn_on_poll(uv_poll_t *h, int status, int events) {
  rconn *c = h->data;
  if (status < 0) {
    conn_fail(c, uv_strerror(status));
    return;
  }
  switch (c->state) {
  case RC_CONNECTING: {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      conn_fail(c, strerror(err ? err : errno));
      return;
    }
    push_redis *r = c->sh->r;
    if (r->ssl_ctx == NULL) {
      conn_ready(c);
      return;
    }
    c->ssl = SSL_new(r->ssl_ctx);
    const char *name =
        r->cfg.tls_server_name ? r->cfg.tls_server_name : c->sh->host;
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_tlsext_host_name(c->ssl, name) != 1 ||
        (!r->cfg.tls_insecure && SSL_set1_host(c->ssl, name) != 1)) {
      conn_fail(c, "TLS setup failed");
      return;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->state = RC_TLS;
    conn_tls_step(c);
    return;
  }
  case RC_TLS:
    conn_tls_step(c);
    return;
  case RC_UP:
    if (events & UV_READABLE) {
      conn_read(c);
    }
    if (c->state == RC_UP && (events & UV_WRITABLE)) {
      conn_flush(c);
    }
    return;
  case RC_DOWN:
    return;
  }
}

static void conn_start(rconn *c, const struct sockaddr *sa, socklen_t salen) {
  push_redis *r = c->sh->r;
  c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    conn_fail(c, strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  if (connect(c->fd, sa, salen) != 0 && errno != EINPROGRESS) {
    conn_fail(c, strerror(errno));
    return;
  }
  c->poll = malloc(sizeof *c->poll);
  if (c->poll == NULL || uv_poll_init_socket(r->loop, c->poll, c->fd) != 0) {
    free(c->poll);
    c->poll = NULL;
    conn_fail(c, "cannot watch the socket");
    return;
  }
  r->open_handles++;
  c->poll->data = c;
  c->state = RC_CONNECTING;
  c->events = 0;
  conn_watch(c, UV_WRITABLE);
}

/* ------------------------------------------------------------------------ */
/* Shards                                                                   */
/* ------------------------------------------------------------------------ */

static void chan_shard_up(rchan *ch);
static void chan_shard_down(rchan *ch);
static void shard_connect(rshard *sh);

static void heartbeat(push_redis *r);

static void shard_check_up(rshard *sh) {
  if (sh->up || sh->cmd.state != RC_UP || sh->sub.state != RC_UP ||
      sh->scripts_loaded < NSCRIPTS || sh->r->closing) {
    return;
  }
  push_redis *r = sh->r;
  sh->up = 1;
  sh->backoff_ms = 0;
  push_log(PUSH_LOG_INFO, "ev=redis_up shard=%d addr=%s:%s pubsub=%s",
           sh->index, sh->host, sh->port, sh->sharded ? "sharded" : "classic");
  if (sh->index == 0) {
    heartbeat(r); /* in the node list at once, not a tick later */
  }
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (ch->sh == sh) {
        chan_shard_up(ch);
      }
    }
  }
}

static void on_retry(uv_timer_t *t) {
  shard_connect(t->data);
}

static void shard_down(rshard *sh, const char *why) {
  push_redis *r = sh->r;
  int was_up = sh->up;
  if (!sh->active) {
    return;
  }
  sh->active = 0;
  sh->up = 0;
  sh->scripts_loaded = 0;
  if (!r->closing) {
    push_log(was_up ? PUSH_LOG_ERROR : PUSH_LOG_WARN,
             "ev=redis_down shard=%d addr=%s:%s error=\"%s\"", sh->index,
             sh->host, sh->port, why);
  }
  conn_close(&sh->cmd);
  conn_close(&sh->sub);
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (ch->sh == sh) {
        chan_shard_down(ch);
      }
    }
  }
  if (r->closing) {
    return;
  }
  /* Exponential backoff with +-25% jitter, so that nodes do not reconnect
   * in lockstep after a Redis restart. */
  uint32_t b = sh->backoff_ms ? sh->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (b > BACKOFF_MAX_MS) {
    b = BACKOFF_MAX_MS;
  }
  sh->backoff_ms = b;
  uint32_t rnd = 0;
  if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) {
    rnd = (uint32_t)rand();
  }
  uint64_t delay = b * 3 / 4 + rnd % (b / 2 + 1);
  uv_timer_start(&sh->retry, on_retry, delay, 0);
  r->st.reconnects++;
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  rshard *sh = req->data;
  sh->resolving = 0;
  push_redis *r = sh->r;
  if (r->closing) {
    uv_freeaddrinfo(res);
    r->open_handles--;
    redis_maybe_free(r);
    return;
  }
  r->open_handles--;
  if (status != 0 || res == NULL) {
    char why[400];
    snprintf(why, sizeof why, "cannot resolve %s: %s", sh->host,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    shard_down(sh, why);
    return;
  }
  conn_start(&sh->cmd, res->ai_addr, res->ai_addrlen);
  if (sh->cmd.state != RC_DOWN) {
    conn_start(&sh->sub, res->ai_addr, res->ai_addrlen);
  }
  uv_freeaddrinfo(res);
}

static void shard_connect(rshard *sh) {
  push_redis *r = sh->r;
  if (r->closing || sh->resolving) {
    return;
  }
  sh->active = 1;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  sh->gai.data = sh;
  sh->resolving = 1;
  r->open_handles++;
  if (uv_getaddrinfo(r->loop, &sh->gai, on_resolved, sh->host, sh->port,
                     &hints) != 0) {
    sh->resolving = 0;
    r->open_handles--;
    shard_down(sh, "cannot resolve");
  }
}

/* ---- connection setup: AUTH, the pub/sub flavour, the scripts ---------- */

static void on_setup_reply(rconn *c, redisReply *reply, const pending *p) {
  void *ud = p->ud;
  (void)ud;
  if (reply == NULL) {
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof why, "%s", reply->str);
    conn_fail(c, why);
  }
}

static void on_script_loaded(rconn *c, redisReply *reply, const pending *p) {
  void *ud = p->ud;
  rshard *sh = c->sh;
  size_t i = (size_t)(uintptr_t)ud;
  if (reply == NULL) {
    return;
  }
  if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
    conn_fail(c, reply->type == REDIS_REPLY_ERROR ? reply->str
                                                  : "SCRIPT LOAD failed");
    return;
  }
  memcpy(sh->sha[i], reply->str, 40);
  sh->sha[i][40] = 0;
  sh->scripts_loaded++;
  shard_check_up(sh);
}

/* COMMAND INFO SPUBLISH: an array holding nil when Redis predates 7. */
static void on_command_info(rconn *c, redisReply *reply, const pending *p) {
  void *ud = p->ud;
  (void)ud;
  if (reply == NULL) {
    return;
  }
  rshard *sh = c->sh;
  int has = reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
            reply->element[0]->type == REDIS_REPLY_ARRAY;
  sh->sharded = sh->r->cfg.sharded && has;
}

static void conn_ready(rconn *c) {
  push_redis *r = c->sh->r;
  c->state = RC_UP;
  c->ping_sent_ms = 0;
  c->reader = redisReaderCreate();
  if (c->reader == NULL) {
    conn_fail(c, "out of memory");
    return;
  }
  conn_watch(c, UV_READABLE);
  if (r->cfg.password != NULL) {
    const char *argv[3] = {"AUTH", r->cfg.user, r->cfg.password};
    size_t lens[3] = {4, r->cfg.user ? strlen(r->cfg.user) : 0,
                      strlen(r->cfg.password)};
    if (r->cfg.user == NULL) {
      argv[1] = r->cfg.password;
      lens[1] = lens[2];
    }
    conn_cmd(c, on_setup_reply, NULL, r->cfg.user ? 3 : 2, argv, lens);
  }
  if (!c->is_sub) {
    const char *ci[3] = {"COMMAND", "INFO", "SPUBLISH"};
    size_t cl[3] = {7, 4, 8};
    conn_cmd(c, on_command_info, NULL, 3, ci, cl);
    for (size_t i = 0; i < NSCRIPTS; i++) {
      const char *argv[3] = {"SCRIPT", "LOAD", scripts[i]};
      size_t lens[3] = {6, 4, strlen(scripts[i])};
      conn_cmd(c, on_script_loaded, (void *)(uintptr_t)i, 3, argv, lens);
    }
  }
  shard_check_up(c->sh);
}

/* ---- health pings ------------------------------------------------------ */

static void on_pong(rconn *c, redisReply *reply, const pending *p) {
  void *ud = p->ud;
  (void)ud;
  if (reply != NULL) {
    c->ping_sent_ms = 0;
  }
}

static void conn_ping(rconn *c, int64_t now) {
  if (c->state == RC_DOWN) {
    return;
  }
  uint32_t timeout = c->sh->r->cfg.ping_timeout_ms;
  /* Connecting or pinging for too long: Redis is not answering. */
  if (c->state != RC_UP) {
    if (c->ping_sent_ms == 0) {
      c->ping_sent_ms = now;
    } else if (now - c->ping_sent_ms > timeout) {
      conn_fail(c, "connect timed out");
    }
    return;
  }
  if (c->ping_sent_ms != 0) {
    if (now - c->ping_sent_ms > timeout) {
      conn_fail(c, "no answer to PING");
    }
    return;
  }
  const char *argv[1] = {"PING"};
  size_t lens[1] = {4};
  if (conn_cmd(c, on_pong, NULL, 1, argv, lens) == 0) {
    c->ping_sent_ms = now;
  }
}

/* ------------------------------------------------------------------------ */
/* Keys and placement                                                       */
/* ------------------------------------------------------------------------ */

/* FNV-1a: the same on every node (placement must agree everywhere, so it
 * cannot be keyed; it only picks a shard, never a hash-table slot). */
static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* Jump consistent hash (Lamping and Veach, 2014). */
static int32_t jump_hash(uint64_t key, int32_t buckets) {
  int64_t b = -1, j = 0;
  while (j < buckets) {
    b = j;
    key = key * 2862933555777941757ULL + 1;
    j = (int64_t)((double)(b + 1) *
                  ((double)(1LL << 31) / (double)((key >> 33) + 1)));
  }
  return (int32_t)b;
}

static rshard *shard_of(push_redis *r, const char *channel) {
  return &r->shards[jump_hash(fnv1a(channel, strlen(channel)),
                              (int32_t)r->nshards)];
}

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

static void ckeys_make(const push_redis *r, const char *channel, ckeys *k) {
  int n = snprintf(k->ps, sizeof k->ps, "%s.{%s}", r->prefix, channel);
  k->len = n < 0 ? 0 : (size_t)n; /* fits: prefix <= 32, channel <= 255 */
  k->slen = k->len + 2;
  char *const dst[4] = {k->s, k->m, k->p, k->z};
  static const char suffix[4] = {'s', 'm', 'p', 'z'};
  for (int i = 0; i < 4; i++) {
    memcpy(dst[i], k->ps, k->len);
    dst[i][k->len] = '.';
    dst[i][k->len + 1] = suffix[i];
    dst[i][k->len + 2] = 0;
  }
}

/* TTL of a channel's meta hash (s; 0: none): kept at least a day past the
 * last publish, so that the epoch outlives the history; forever when the
 * history is kept forever. */
static uint32_t meta_ttl(const push_ns *ns) {
  uint32_t t = ns->history_ttl_s;
  return ns->history_size > 0 && t == 0 ? 0 : t > 86400 ? t : 86400;
}

/* An epoch for a channel that turns out to be new: this node's random
 * 8 characters, then a counter, so that no two candidates are alike across
 * nodes and restarts, without a syscall per publish. */
static void next_epoch(push_redis *r, char out[PUSH_EPOCH_MAX + 1]) {
  uint64_t n = ++r->epoch_seq;
  memcpy(out, r->epoch_base, 8);
  for (int i = 15; i >= 8; i--) {
    out[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[n % 36];
    n /= 36;
  }
  out[16] = 0;
}

/* ------------------------------------------------------------------------ */
/* Channels                                                                 */
/* ------------------------------------------------------------------------ */

static rchan *chan_find(push_redis *r, const char *name, size_t n) {
  if (r->nbuckets == 0) {
    return NULL;
  }
  uint32_t h = push_hash_str(r->hkey, name, n);
  for (rchan *ch = r->buckets[h & (r->nbuckets - 1)]; ch; ch = ch->next) {
    if (ch->hash == h && strncmp(ch->name, name, n) == 0 && ch->name[n] == 0) {
      return ch;
    }
  }
  return NULL;
}

static int chan_grow(push_redis *r) {
  size_t nb = r->nbuckets ? r->nbuckets * 2 : 64;
  rchan **b = calloc(nb, sizeof *b);
  if (b == NULL) {
    return -1;
  }
  for (size_t i = 0; i < r->nbuckets; i++) {
    for (rchan *ch = r->buckets[i], *next; ch; ch = next) {
      next = ch->next;
      ch->next = b[ch->hash & (nb - 1)];
      b[ch->hash & (nb - 1)] = ch;
    }
  }
  free(r->buckets);
  r->buckets = b;
  r->nbuckets = nb;
  return 0;
}

static rchan *chan_get(push_redis *r, const char *name) {
  size_t n = strlen(name);
  rchan *ch = chan_find(r, name, n);
  if (ch != NULL) {
    return ch;
  }
  const push_ns *ns = push_hub_ns(r->hub, name);
  if (ns == NULL || (r->nchans + 1 > r->nbuckets && chan_grow(r) != 0)) {
    return NULL;
  }
  ch = calloc(1, sizeof *ch + n + 1);
  if (ch == NULL) {
    return NULL;
  }
  memcpy(ch->name, name, n + 1);
  ch->hash = push_hash_str(r->hkey, name, n);
  ch->sh = shard_of(r, name);
  ch->ns = ns;
  ch->wtail = &ch->waiters;
  ch->idle_since = wall_ms();
  size_t b = ch->hash & (r->nbuckets - 1);
  ch->next = r->buckets[b];
  r->buckets[b] = ch;
  r->nchans++;
  return ch;
}

static void chan_clear_buffer(rchan *ch) {
  for (size_t i = 0; i < ch->nbuf; i++) {
    free(ch->buf[i].copy);
  }
  ch->nbuf = 0;
  ch->overflow = 0;
}

static void chan_free(push_redis *r, rchan *ch) {
  rchan **pp = &r->buckets[ch->hash & (r->nbuckets - 1)];
  while (*pp != ch) {
    pp = &(*pp)->next;
  }
  *pp = ch->next;
  r->nchans--;
  chan_clear_buffer(ch);
  free(ch->buf);
  free(ch);
}

/* Calls and removes every waiter with status. A PUSH_REDIS_OK keeps the
 * waiter's reference; any other drops it. */
static void chan_wake(rchan *ch, int status) {
  waiter *w = ch->waiters;
  ch->waiters = NULL;
  ch->wtail = &ch->waiters;
  while (w != NULL) {
    waiter *next = w->next;
    if (status != PUSH_REDIS_OK) {
      ch->refs--;
    }
    push_redis_reply rep = {.status = status};
    w->cb(w->ud, &rep);
    free(w);
    w = next;
  }
}

static void chan_subscribe(rchan *ch);
static void chan_load(rchan *ch);

static void chan_shard_up(rchan *ch) {
  if (ch->refs > 0 || ch->waiters != NULL) {
    chan_subscribe(ch);
  }
}

static void chan_shard_down(rchan *ch) {
  ch->state = CH_IDLE;
  ch->reload = 0;
  chan_clear_buffer(ch);
  chan_wake(ch, PUSH_REDIS_DOWN);
}

static void on_subscribed(rconn *c, redisReply *reply, const pending *p) {
  void *ud = p->ud;
  rchan *ch = ud;
  (void)c;
  ch->inflight--;
  if (reply == NULL || ch->state != CH_SUBSCRIBING) {
    return; /* the shard went down: it resubscribes when up */
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    push_log(PUSH_LOG_ERROR,
             "ev=redis_error op=subscribe channel=%s error=\"%s\"", ch->name,
             reply->str);
    ch->sh->r->st.errors++;
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  chan_load(ch);
}

static void chan_subscribe(rchan *ch) {
  rshard *sh = ch->sh;
  ckeys k;
  ckeys_make(sh->r, ch->name, &k);
  const char *argv[2] = {sh->sharded ? "SSUBSCRIBE" : "SUBSCRIBE", k.ps};
  size_t lens[2] = {strlen(argv[0]), k.len};
  ch->state = CH_SUBSCRIBING;
  chan_clear_buffer(ch);
  if (conn_cmd(&sh->sub, on_subscribed, ch, 2, argv, lens) != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_DOWN);
    return;
  }
  ch->inflight++;
}

/* Parses "<offset>-0" stream IDs. */
static int parse_u64(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  size_t i = 0;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
    if (v > (UINT64_MAX - 9) / 10) {
      return -1;
    }
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (i == 0) {
    return -1;
  }
  *out = v;
  return (int)i;
}

/* Applies the buffered messages after a load, in order. Returns 1 when one
 * did not follow (another load is needed), else 0. */
static int chan_apply_buffer(push_redis *r, rchan *ch) {
  size_t i = 0;
  int gap = 0;
  for (; i < ch->nbuf; i++) {
    push_pos pos;
    if (push_hub_pos(r->hub, ch->name, &pos) != 0) {
      break;
    }
    rmsg *m = &ch->buf[i];
    if (strcmp(m->epoch, pos.epoch) == 0 && m->e.offset <= pos.offset) {
      continue; /* the load had it */
    }
    if (push_hub_append(r->hub, ch->name, m->epoch, &m->e) == 1) {
      gap = 1;
      break;
    }
  }
  /* Keep what could not be applied for after the next load. */
  for (size_t k = 0; k < i; k++) {
    free(ch->buf[k].copy);
  }
  if (i > 0) {
    memmove(ch->buf, ch->buf + i, (ch->nbuf - i) * sizeof *ch->buf);
    ch->nbuf -= i;
  }
  return gap || ch->overflow;
}

static void on_loaded(rconn *c, redisReply *reply, const pending *p) {
  void *ud = p->ud;
  rchan *ch = ud;
  push_redis *r = c->sh->r;
  ch->inflight--;
  if (reply == NULL || ch->state != CH_LOADING) {
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_INTEGER ||
      reply->element[2]->type != REDIS_REPLY_ARRAY ||
      reply->element[0]->len > PUSH_EPOCH_MAX) {
    push_log(PUSH_LOG_ERROR, "ev=redis_error op=load channel=%s error=\"%s\"",
             ch->name,
             reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
    r->st.errors++;
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  char epoch[PUSH_EPOCH_MAX + 1];
  memcpy(epoch, reply->element[0]->str, reply->element[0]->len);
  epoch[reply->element[0]->len] = 0;
  uint64_t offset = (uint64_t)reply->element[1]->integer;
  redisReply *items = reply->element[2];
  size_t n = items->elements;
  push_ext_pub *e = n ? calloc(n, sizeof *e) : NULL;
  size_t ne = 0;
  /* XREVRANGE is newest first; the hub wants oldest first. */
  for (size_t i = n; i-- > 0;) {
    redisReply *it = items->element[i];
    if (it->type != REDIS_REPLY_ARRAY || it->elements != 2 ||
        it->element[0]->type != REDIS_REPLY_STRING ||
        it->element[1]->type != REDIS_REPLY_ARRAY) {
      continue;
    }
    push_ext_pub x = {0};
    if (parse_u64(it->element[0]->str, it->element[0]->len, &x.offset) < 0) {
      continue;
    }
    redisReply *f = it->element[1];
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
      redisReply *fk = f->element[k], *fv = f->element[k + 1];
      if (fk->type != REDIS_REPLY_STRING || fv->type != REDIS_REPLY_STRING) {
        continue;
      }
      if (fk->len == 1 && fk->str[0] == 't') {
        uint64_t t;
        if (parse_u64(fv->str, fv->len, &t) > 0) {
          x.time_ms = (int64_t)t;
        }
      } else if (fk->len == 1 && fk->str[0] == 'p') {
        x.tail = fv->str;
        x.tail_len = fv->len;
      }
    }
    if (x.tail != NULL && e != NULL) {
      e[ne++] = x;
    }
  }
  if (n > 0 && e == NULL) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  /* A resync: subscribers here hold a position; deliver what they missed
   * from the loaded history, or tell them it is gone. */
  push_pos cur;
  if (push_hub_nsubscribers(r->hub, ch->name) > 0 &&
      push_hub_pos(r->hub, ch->name, &cur) == 0 &&
      !(strcmp(cur.epoch, epoch) == 0 && cur.offset == offset)) {
    int lost = strcmp(cur.epoch, epoch) != 0 || offset < cur.offset;
    size_t k = 0;
    while (!lost && k < ne && e[k].offset <= cur.offset) {
      k++;
    }
    if (!lost && (k == ne || e[k].offset != cur.offset + 1 ||
                  e[ne - 1].offset != offset)) {
      lost = 1;
    }
    r->st.resyncs++;
    if (!lost) {
      for (; k < ne; k++) {
        if (push_hub_append(r->hub, ch->name, epoch, &e[k]) != 0) {
          lost = 1;
          break;
        }
      }
    }
    if (lost) {
      r->st.lost++;
      push_log(PUSH_LOG_WARN,
               "ev=redis_gap channel=%s had=%s:%" PRIu64 " now=%s:%" PRIu64,
               ch->name, cur.epoch, cur.offset, epoch, offset);
      if (r->ev.on_lost) {
        r->ev.on_lost(r->ev.ud, ch->name);
      }
    }
  }
  int rv = push_hub_load(r->hub, ch->name, epoch, offset, e, ne, wall_ms());
  free(e);
  if (rv != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_ERROR);
    return;
  }
  if (chan_apply_buffer(r, ch)) {
    ch->overflow = 0;
    chan_load(ch); /* still a gap: read again */
    return;
  }
  ch->state = CH_LIVE;
  chan_wake(ch, PUSH_REDIS_OK);
}

static void chan_load(rchan *ch) {
  rshard *sh = ch->sh;
  ckeys k;
  ckeys_make(sh->r, ch->name, &k);
  char count[24], mttl[24], epoch[PUSH_EPOCH_MAX + 1];
  snprintf(count, sizeof count, "%" PRIu32, ch->ns->history_size);
  snprintf(mttl, sizeof mttl, "%" PRIu32, meta_ttl(ch->ns));
  next_epoch(sh->r, epoch);
  const char *argv[] = {"EVALSHA", sh->sha[S_LOAD], "2",   k.s,
                        k.m,       count,           epoch, mttl};
  size_t lens[] = {7, 40, 1, k.slen, k.slen, strlen(count), 16, strlen(mttl)};
  ch->state = CH_LOADING;
  if (conn_cmd(&sh->cmd, on_loaded, ch, 8, argv, lens) != 0) {
    ch->state = CH_IDLE;
    chan_wake(ch, PUSH_REDIS_DOWN);
    return;
  }
  ch->inflight++;
}

/* A message from pub/sub: "p<offset> <epoch> <ms> <tail>" or "j<push>". */
static void on_message(rshard *sh, const char *key, size_t klen,
                       const char *msg, size_t len) {
  push_redis *r = sh->r;
  size_t pl = strlen(r->prefix);
  if (klen < pl + 3 || memcmp(key, r->prefix, pl) != 0 || key[pl] != '.' ||
      key[pl + 1] != '{' || key[klen - 1] != '}') {
    return;
  }
  rchan *ch = chan_find(r, key + pl + 2, klen - pl - 3);
  if (ch == NULL || len < 1) {
    return;
  }
  if (msg[0] == 'j') {
    if (ch->state == CH_LIVE) {
      push_hub_broadcast_raw(r->hub, ch->name, msg + 1, len - 1);
    }
    return;
  }
  if (msg[0] != 'p') {
    return;
  }
  rmsg m;
  memset(&m, 0, sizeof m);
  const char *p = msg + 1, *end = msg + len;
  int k = parse_u64(p, (size_t)(end - p), &m.e.offset);
  if (k < 0 || p + k >= end || p[k] != ' ') {
    return;
  }
  p += k + 1;
  const char *sp = memchr(p, ' ', (size_t)(end - p));
  if (sp == NULL || sp - p > PUSH_EPOCH_MAX) {
    return;
  }
  memcpy(m.epoch, p, (size_t)(sp - p));
  p = sp + 1;
  uint64_t t;
  k = parse_u64(p, (size_t)(end - p), &t);
  if (k < 0 || p + k >= end || p[k] != ' ') {
    return;
  }
  m.e.time_ms = (int64_t)t;
  m.e.tail = p + k + 1;
  m.e.tail_len = (size_t)(end - m.e.tail);
  if (ch->state == CH_LIVE) {
    int rv = push_hub_append(r->hub, ch->name, m.epoch, &m.e);
    if (rv != 1) {
      return;
    }
    push_pos pos;
    if (push_hub_pos(r->hub, ch->name, &pos) == 0 &&
        strcmp(pos.epoch, m.epoch) == 0 && m.e.offset <= pos.offset) {
      return; /* seen already */
    }
    /* A gap: keep this one and read what is missing. */
    chan_load(ch);
    if (ch->state != CH_LOADING) {
      return;
    }
  }
  if (ch->state != CH_LOADING && ch->state != CH_SUBSCRIBING) {
    return;
  }
  if (ch->nbuf >= MSG_BUFFER_MAX) {
    ch->overflow = 1; /* the next load reads them from the stream */
    return;
  }
  if (ch->nbuf == ch->capbuf) {
    size_t nc = ch->capbuf ? ch->capbuf * 2 : 8;
    rmsg *nb = realloc(ch->buf, nc * sizeof *nb);
    if (nb == NULL) {
      ch->overflow = 1;
      return;
    }
    ch->buf = nb;
    ch->capbuf = nc;
  }
  m.copy = malloc(m.e.tail_len ? m.e.tail_len : 1);
  if (m.copy == NULL) {
    ch->overflow = 1;
    return;
  }
  memcpy(m.copy, m.e.tail, m.e.tail_len);
  m.e.tail = m.copy;
  ch->buf[ch->nbuf++] = m;
}

static void conn_dispatch(rconn *c, redisReply *reply) {
  if (c->is_sub && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
      reply->element[0]->type == REDIS_REPLY_STRING &&
      reply->element[1]->type == REDIS_REPLY_STRING &&
      reply->element[2]->type == REDIS_REPLY_STRING &&
      ((reply->element[0]->len == 8 &&
        memcmp(reply->element[0]->str, "smessage", 8) == 0) ||
       (reply->element[0]->len == 7 &&
        memcmp(reply->element[0]->str, "message", 7) == 0))) {
    on_message(c->sh, reply->element[1]->str, reply->element[1]->len,
               reply->element[2]->str, reply->element[2]->len);
    return;
  }
  if (c->qlen == 0) {
    conn_fail(c, "unexpected reply");
    return;
  }
  pending p = c->q[c->qhead];
  c->qhead = (c->qhead + 1) % c->qcap;
  c->qlen--;
  int noscript = 0;
  if (reply->type == REDIS_REPLY_ERROR && p.fn != on_setup_reply &&
      p.fn != on_script_loaded) {
    c->sh->r->st.errors++;
    noscript = reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0;
  }
  p.fn(c, reply, &p);
  if (noscript && c->state == RC_UP) {
    /* SCRIPT FLUSH, or a failover to a server that never loaded them:
     * every script call would fail from now on. Reconnecting loads them
     * again; the calls that failed were answered with an error. */
    conn_fail(c, "NOSCRIPT: Redis lost the scripts, reconnecting");
  }
}

/* ------------------------------------------------------------------------ */
/* The API                                                                  */
/* ------------------------------------------------------------------------ */

int push_redis_healthy(const push_redis *r) {
  for (size_t i = 0; i < r->nshards; i++) {
    if (!r->shards[i].up) {
      return 0;
    }
  }
  return 1;
}

int push_redis_sync(push_redis *r, const char *channel, push_redis_cb cb,
                    void *ud) {
  rchan *ch = chan_get(r, channel);
  if (ch == NULL) {
    return PUSH_REDIS_DOWN;
  }
  push_pos pos;
  if (ch->state == CH_LIVE && push_hub_pos(r->hub, channel, &pos) == 0) {
    ch->refs++;
    return 0;
  }
  if (!ch->sh->up) {
    if (ch->refs == 0 && ch->waiters == NULL && ch->inflight == 0) {
      chan_free(r, ch);
    }
    return PUSH_REDIS_DOWN;
  }
  waiter *w = malloc(sizeof *w);
  if (w == NULL) {
    return PUSH_REDIS_DOWN;
  }
  w->cb = cb;
  w->ud = ud;
  w->next = NULL;
  *ch->wtail = w;
  ch->wtail = &w->next;
  ch->refs++;
  if (ch->state == CH_LIVE) {
    chan_load(ch); /* the hub forgot the channel: load it again */
  } else if (ch->state == CH_IDLE) {
    chan_subscribe(ch);
  }
  return 1;
}

void push_redis_release(push_redis *r, const char *channel) {
  rchan *ch = chan_find(r, channel, strlen(channel));
  if (ch != NULL && ch->refs > 0 && --ch->refs == 0) {
    ch->idle_since = wall_ms();
  }
}

static void on_published(rconn *c, redisReply *reply, const pending *p) {
  (void)c;
  push_redis_reply rep = {.status = PUSH_REDIS_DOWN};
  if (reply != NULL) {
    rep.status = PUSH_REDIS_ERROR;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[1]->len <= PUSH_EPOCH_MAX) {
      rep.status = PUSH_REDIS_OK;
      rep.pos.offset = (uint64_t)reply->element[0]->integer;
      memcpy(rep.pos.epoch, reply->element[1]->str, reply->element[1]->len);
      rep.pos.epoch[reply->element[1]->len] = 0;
      rep.pos.set = 1;
    } else {
      push_log(PUSH_LOG_ERROR, "ev=redis_error op=publish error=\"%s\"",
               reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
    }
  }
  p->cb(p->ud, &rep);
}

int push_redis_publish(push_redis *r, const char *channel, const char *tail,
                       size_t len, push_redis_cb cb, void *ud) {
  rshard *sh = shard_of(r, channel);
  const push_ns *ns = push_hub_ns(r->hub, channel);
  if (!sh->up || ns == NULL) {
    return PUSH_REDIS_DOWN;
  }
  ckeys k;
  ckeys_make(r, channel, &k);
  char size[24], ttl[24], mttl[24], epoch[PUSH_EPOCH_MAX + 1];
  snprintf(size, sizeof size, "%" PRIu32, ns->history_size);
  snprintf(ttl, sizeof ttl, "%" PRIu32, ns->history_ttl_s);
  snprintf(mttl, sizeof mttl, "%" PRIu32, meta_ttl(ns));
  next_epoch(r, epoch);
  const char *pubcmd = sh->sharded ? "SPUBLISH" : "PUBLISH";
  const char *argv[] = {"EVALSHA", sh->sha[S_PUBLISH],
                        "2",       k.s,
                        k.m,       k.ps,
                        tail,      size,
                        ttl,       epoch,
                        mttl,      pubcmd};
  size_t lens[] = {
      7,   40,           1,           k.slen, k.slen,       k.len,
      len, strlen(size), strlen(ttl), 16,     strlen(mttl), strlen(pubcmd)};
  return conn_cmd_cb(&sh->cmd, on_published, cb, ud, 12, argv, lens) == 0
             ? 1
             : PUSH_REDIS_DOWN;
}

static void on_ignored(rconn *c, redisReply *reply, const pending *p) {
  (void)c;
  (void)p;
  if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
    push_log(PUSH_LOG_WARN, "ev=redis_error error=\"%s\"", reply->str);
  }
}

/* Runs a presence script with the channel's keys, its pub/sub channel and
 * publish command, then nargs more arguments. */
static int presence_script(push_redis *r, const char *channel, int script,
                           reply_fn fn, push_redis_cb cb, void *ud, int nargs,
                           const char **args, const size_t *lens) {
  rshard *sh = shard_of(r, channel);
  if (!sh->up) {
    return PUSH_REDIS_DOWN;
  }
  ckeys k;
  ckeys_make(r, channel, &k);
  const char *pubcmd = sh->sharded ? "SPUBLISH" : "PUBLISH";
  const char *argv[12] = {"EVALSHA", sh->sha[script], "2", k.p, k.z,
                          k.ps,      pubcmd};
  size_t al[12] = {7, 40, 1, k.slen, k.slen, k.len, strlen(pubcmd)};
  for (int i = 0; i < nargs && i < 5; i++) {
    argv[7 + i] = args[i];
    al[7 + i] = lens[i];
  }
  return conn_cmd_cb(&sh->cmd, fn, cb, ud, 7 + nargs, argv, al) == 0
             ? 1
             : PUSH_REDIS_DOWN;
}

int push_redis_presence_add(push_redis *r, const char *channel,
                            const char *client, const char *entry_json,
                            const push_buf *join) {
  char ttl[24];
  snprintf(ttl, sizeof ttl, "%" PRIu64, (uint64_t)r->cfg.presence_ttl_s * 1000);
  const char *args[] = {client, entry_json, ttl, join ? join->p : ""};
  size_t lens[] = {strlen(client), strlen(entry_json), strlen(ttl),
                   join ? join->len : 0};
  return presence_script(r, channel, S_PADD, on_ignored, NULL, NULL, 4, args,
                         lens) == 1
             ? 0
             : PUSH_REDIS_DOWN;
}

int push_redis_presence_remove(push_redis *r, const char *channel,
                               const char *client, const push_buf *leave) {
  const char *args[] = {client, leave ? leave->p : ""};
  size_t lens[] = {strlen(client), leave ? leave->len : 0};
  return presence_script(r, channel, S_PREMOVE, on_ignored, NULL, NULL, 2, args,
                         lens) == 1
             ? 0
             : PUSH_REDIS_DOWN;
}

/* Answers p->cb with a JSON text made from an array reply: write() turns
 * the reply into JSON in b, returning 0 or -1. */
static void answer_json(rconn *c, redisReply *reply, const pending *p,
                        int (*write)(push_buf *b, const redisReply *a)) {
  push_redis *r = c->sh->r;
  push_redis_reply rep = {.status = PUSH_REDIS_DOWN};
  push_buf *b = &r->scratch;
  b->len = 0;
  if (reply != NULL) {
    rep.status = PUSH_REDIS_ERROR;
    if (reply->type == REDIS_REPLY_ARRAY && write(b, reply) == 0) {
      rep.status = PUSH_REDIS_OK;
      rep.json = b->p;
      rep.len = b->len;
    }
  }
  p->cb(p->ud, &rep);
  push_buf_done(b, 1 << 16);
}

/* HGETALL pairs -> {"clients":{id:entry,...}} */
static int write_presence(push_buf *b, const redisReply *a) {
  int rc = push_buf_raw(b, "{\"clients\":{", 12);
  int first = 1;
  for (size_t i = 0; i + 1 < a->elements && rc == 0; i += 2) {
    const redisReply *k = a->element[i], *v = a->element[i + 1];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
      continue;
    }
    rc = (first ? 0 : push_buf_raw(b, ",", 1)) ||
         push_buf_str(b, k->str, k->len) || push_buf_raw(b, ":", 1) ||
         push_buf_raw(b, v->str, v->len);
    first = 0;
  }
  return rc || push_buf_raw(b, "}}", 2);
}

/* node entries -> [entry,...] */
static int write_nodes(push_buf *b, const redisReply *a) {
  int rc = push_buf_raw(b, "[", 1);
  int first = 1;
  for (size_t i = 0; i < a->elements && rc == 0; i++) {
    const redisReply *v = a->element[i];
    if (v->type != REDIS_REPLY_STRING) {
      continue;
    }
    rc = (first ? 0 : push_buf_raw(b, ",", 1)) ||
         push_buf_raw(b, v->str, v->len);
    first = 0;
  }
  return rc || push_buf_raw(b, "]", 1);
}

static void on_presence(rconn *c, redisReply *reply, const pending *p) {
  answer_json(c, reply, p, write_presence);
}

static void on_nodes(rconn *c, redisReply *reply, const pending *p) {
  answer_json(c, reply, p, write_nodes);
}

int push_redis_presence_get(push_redis *r, const char *channel,
                            push_redis_cb cb, void *ud) {
  return presence_script(r, channel, S_PGET, on_presence, cb, ud, 0, NULL,
                         NULL);
}

/* The node list's keys. */
static void node_keys(const push_redis *r, char h[96], size_t *hl, char z[96],
                      size_t *zl) {
  *hl = (size_t)snprintf(h, 96, "%s.nodes", r->prefix);
  *zl = (size_t)snprintf(z, 96, "%s.nodes.z", r->prefix);
}

int push_redis_nodes(push_redis *r, push_redis_cb cb, void *ud) {
  rshard *sh = &r->shards[0];
  if (!sh->up) {
    return PUSH_REDIS_DOWN;
  }
  char hkey[96], zkey[96];
  size_t hl, zl;
  node_keys(r, hkey, &hl, zkey, &zl);
  const char *argv[] = {"EVALSHA", sh->sha[S_NODES], "2", hkey, zkey};
  size_t lens[] = {7, 40, 1, hl, zl};
  return conn_cmd_cb(&sh->cmd, on_nodes, cb, ud, 5, argv, lens) == 0
             ? 1
             : PUSH_REDIS_DOWN;
}

static void heartbeat(push_redis *r) {
  rshard *sh = &r->shards[0];
  if (!sh->up || r->ev.node_json == NULL) {
    return;
  }
  push_buf b = {0};
  r->ev.node_json(r->ev.ud, &b);
  if (b.p == NULL) {
    return;
  }
  char hkey[96], zkey[96], ttl[24];
  size_t hl, zl;
  node_keys(r, hkey, &hl, zkey, &zl);
  snprintf(ttl, sizeof ttl, "%d", NODE_TTL_MS);
  const char *argv[] = {"EVALSHA", sh->sha[S_BEAT], "2", hkey,
                        zkey,      r->node,         b.p, ttl};
  size_t lens[] = {7, 40, 1, hl, zl, strlen(r->node), b.len, strlen(ttl)};
  conn_cmd(&sh->cmd, on_ignored, NULL, 8, argv, lens);
  push_buf_free(&b);
}

void push_redis_tick(push_redis *r, int64_t now_ms) {
  if (r->closing) {
    return;
  }
  int64_t mono = now_ms;
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    conn_ping(&sh->cmd, mono);
    if (sh->cmd.state != RC_DOWN) {
      conn_ping(&sh->sub, mono);
    }
  }
  heartbeat(r);
  /* Channels nobody here uses any more: unsubscribe after a linger (a
   * client that resubscribes at once does not make us reload). */
  for (size_t b = 0; b < r->nbuckets; b++) {
    for (rchan *ch = r->buckets[b], *next; ch; ch = next) {
      next = ch->next;
      if (ch->refs > 0 || ch->waiters != NULL || ch->inflight > 0 ||
          now_ms - ch->idle_since < CHANNEL_LINGER_MS) {
        continue;
      }
      if (ch->state != CH_IDLE && ch->sh->up) {
        ckeys k;
        ckeys_make(r, ch->name, &k);
        const char *argv[2] = {ch->sh->sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE",
                               k.ps};
        size_t lens[2] = {strlen(argv[0]), k.len};
        conn_cmd(&ch->sh->sub, on_ignored, NULL, 2, argv, lens);
      }
      push_hub_drop_history(r->hub, ch->name);
      chan_free(r, ch);
    }
  }
}

void push_redis_get_stats(const push_redis *r, push_redis_stats *s) {
  *s = r->st;
  s->shards = r->nshards;
  s->shards_up = 0;
  for (size_t i = 0; i < r->nshards; i++) {
    s->shards_up += r->shards[i].up != 0;
  }
  s->channels = r->nchans;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

static int split_addr(const char *a, char *host, size_t hcap, char *port,
                      size_t pcap) {
  const char *colon = strrchr(a, ':');
  const char *h = a;
  size_t hl;
  if (a[0] == '[') {
    const char *rb = strchr(a, ']');
    if (rb == NULL || rb[1] != ':') {
      return -1;
    }
    h = a + 1;
    hl = (size_t)(rb - h);
    colon = rb + 1;
  } else if (colon == NULL) {
    hl = strlen(a);
  } else {
    hl = (size_t)(colon - a);
  }
  const char *p = colon ? colon + 1 : "6379";
  if (hl == 0 || hl >= hcap || strlen(p) == 0 || strlen(p) >= pcap ||
      strspn(p, "0123456789") != strlen(p) || atoi(p) <= 0 || atoi(p) > 65535) {
    return -1;
  }
  memcpy(host, h, hl);
  host[hl] = 0;
  snprintf(port, pcap, "%s", p);
  return 0;
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

push_redis *push_redis_new(uv_loop_t *loop, const push_redis_config *cfg,
                           push_hub *hub, const char *node,
                           const push_redis_events *ev, char *err,
                           size_t errlen) {
  if (cfg->naddrs == 0 || cfg->naddrs > PUSH_REDIS_MAX_SHARDS) {
    snprintf(err, errlen, "redis: give 1 to %d addresses",
             PUSH_REDIS_MAX_SHARDS);
    return NULL;
  }
  push_redis *r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  r->loop = loop;
  r->hub = hub;
  r->ev = *ev;
  r->cfg = *cfg;
  memset(r->cfg.addrs, 0, sizeof r->cfg.addrs);
  r->cfg.user = dup_or_null(cfg->user);
  r->cfg.password = dup_or_null(cfg->password);
  r->cfg.tls_ca = dup_or_null(cfg->tls_ca);
  r->cfg.tls_server_name = dup_or_null(cfg->tls_server_name);
  r->cfg.prefix = NULL;
  if (r->cfg.presence_ttl_s == 0) {
    r->cfg.presence_ttl_s = 30;
  }
  if (r->cfg.ping_timeout_ms == 0) {
    r->cfg.ping_timeout_ms = 3000;
  }
  snprintf(r->node, sizeof r->node, "%s", node);
  snprintf(r->prefix, sizeof r->prefix, "%s",
           cfg->prefix ? cfg->prefix : "herald");
  if (getrandom(r->hkey, sizeof r->hkey, 0) != sizeof r->hkey ||
      push_random_id(r->epoch_base, 8) != 0) {
    snprintf(err, errlen, "getrandom failed");
    goto fail;
  }
  if (cfg->tls) {
    r->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (r->ssl_ctx == NULL) {
      snprintf(err, errlen, "redis TLS: cannot create a context");
      goto fail;
    }
    SSL_CTX_set_min_proto_version(r->ssl_ctx, TLS1_2_VERSION);
    if (!cfg->tls_insecure) {
      SSL_CTX_set_verify(r->ssl_ctx, SSL_VERIFY_PEER, NULL);
      int ok = cfg->tls_ca ? SSL_CTX_load_verify_locations(r->ssl_ctx,
                                                           cfg->tls_ca, NULL)
                           : SSL_CTX_set_default_verify_paths(r->ssl_ctx);
      if (ok != 1) {
        snprintf(err, errlen, "redis TLS: cannot load CA %s",
                 cfg->tls_ca ? cfg->tls_ca : "(system)");
        goto fail;
      }
    }
  }
  r->shards = calloc(cfg->naddrs, sizeof *r->shards);
  if (r->shards == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  r->nshards = cfg->naddrs;
  for (size_t i = 0; i < cfg->naddrs; i++) {
    rshard *sh = &r->shards[i];
    if (split_addr(cfg->addrs[i], sh->host, sizeof sh->host, sh->port,
                   sizeof sh->port) != 0) {
      snprintf(err, errlen, "redis: bad address \"%s\" (host:port)",
               cfg->addrs[i]);
      goto fail;
    }
    sh->r = r;
    sh->index = (int)i;
    sh->sharded = cfg->sharded;
    sh->cmd.sh = sh->sub.sh = sh;
    sh->cmd.fd = sh->sub.fd = -1;
    sh->sub.is_sub = 1;
  }
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    uv_timer_init(loop, &sh->retry);
    sh->retry.data = sh;
    r->open_handles++;
    shard_connect(sh);
  }
  return r;
fail:
  if (r->ssl_ctx) {
    SSL_CTX_free(r->ssl_ctx);
  }
  free(r->shards);
  free(r->cfg.user);
  free(r->cfg.password);
  free(r->cfg.tls_ca);
  free(r->cfg.tls_server_name);
  free(r);
  return NULL;
}

static void on_timer_closed(uv_handle_t *h) {
  rshard *sh = h->data;
  push_redis *r = sh->r;
  r->open_handles--;
  redis_maybe_free(r);
}

static void redis_maybe_free(push_redis *r) {
  if (!r->closing || r->open_handles > 0) {
    return;
  }
  for (size_t i = 0; i < r->nshards; i++) {
    free(r->shards[i].cmd.q);
    free(r->shards[i].sub.q);
    push_buf_free(&r->shards[i].cmd.out);
    push_buf_free(&r->shards[i].sub.out);
  }
  for (size_t b = 0; b < r->nbuckets; b++) {
    while (r->buckets[b] != NULL) {
      chan_free(r, r->buckets[b]);
    }
  }
  free(r->buckets);
  free(r->shards);
  if (r->ssl_ctx) {
    SSL_CTX_free(r->ssl_ctx);
  }
  push_buf_free(&r->scratch);
  free(r->cfg.user);
  free(r->cfg.password);
  free(r->cfg.tls_ca);
  free(r->cfg.tls_server_name);
  free(r);
}

void push_redis_del(push_redis *r) {
  if (r == NULL) {
    return;
  }
  /* Leave the node list at once (best effort: a write that does not make
   * it expires with the heartbeat TTL). */
  rshard *s0 = &r->shards[0];
  if (s0->up && s0->cmd.out.len == s0->cmd.out_off) {
    char hkey[96], zkey[96];
    size_t hl, zl;
    node_keys(r, hkey, &hl, zkey, &zl);
    const char *a1[] = {"HDEL", hkey, r->node}, *a2[] = {"ZREM", zkey, r->node};
    size_t l1[] = {4, hl, strlen(r->node)};
    size_t l2[] = {4, zl, strlen(r->node)};
    conn_cmd(&s0->cmd, on_ignored, NULL, 3, a1, l1);
    conn_cmd(&s0->cmd, on_ignored, NULL, 3, a2, l2);
    conn_flush(&s0->cmd);
  }
  r->closing = 1;
  for (size_t i = 0; i < r->nshards; i++) {
    rshard *sh = &r->shards[i];
    shard_down(sh, "closing");
    uv_timer_stop(&sh->retry);
    uv_close((uv_handle_t *)&sh->retry, on_timer_closed);
    if (sh->resolving) {
      uv_cancel((uv_req_t *)&sh->gai);
    }
  }
  redis_maybe_free(r);
}
