/* redis_conn.h - one connection to a Redis server, for the Redis engine.
 *
 * A nonblocking TCP socket watched by a uv_poll handle, optionally wrapped
 * in OpenSSL (SSL_set_fd), with hiredis' RESP reader and a FIFO of reply
 * callbacks: Redis answers in order, so the n-th reply belongs to the n-th
 * command. Commands are written in RESP straight into an output buffer that
 * leaves when the socket is writable, so every command issued in one loop
 * pass goes out in one write. The only replies nobody asked for are pub/sub
 * messages on a subscriber connection.
 *
 * The connection knows what RESP and pub/sub messages look like, not what
 * the commands mean. Its owner (redis.c: a shard; also a sentinel or the
 * cluster's slot map) is called up with ready (connected, TLS done: send
 * the setup commands), failed (why it cannot go on: the owner closes it,
 * and reconnects when it likes), message (a pub/sub message) and
 * unsubscribed (the server ended a subscription), plus error_reply (to
 * count errors), redirect (to send a command elsewhere: Redis Cluster's
 * MOVED and ASK) and handle_closed (to free what holds the connection
 * once libuv is done). Address resolution, reconnecting and backoff are
 * the owner's.
 */
#ifndef HERALD_PUSH_REDIS_CONN_H
#define HERALD_PUSH_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "push/push.h"

typedef struct redis_conn redis_conn;
typedef struct redis_pending redis_pending;

/* A reply callback; reply is NULL when the connection closed first. */
typedef void (*redis_reply_fn)(redis_conn *c, redisReply *reply,
                               const redis_pending *p);

/* Any function: a callback of the owner's carried with a command, which
 * its reply function casts back to its real type. */
typedef void (*redis_any_fn)(void);

/* What to do with one reply: fn, with the owner's callback and its
 * argument carried along, so that a command costs no allocation. */
struct redis_pending {
  redis_reply_fn fn;
  redis_any_fn cb;
  void *ud;
  size_t len;    /* the command's RESP bytes (kept on a keep connection) */
  unsigned hops; /* times it was redirected (redis_conn_cmd_again) */
};

typedef struct redis_conn_events {
  /* Connected (TLS handshake done): commands may be sent. */
  void (*ready)(redis_conn *c);
  /* The connection cannot go on; why says what happened (for the log).
   * The owner must call redis_conn_close, at once or later; until then
   * nothing more is read or written. */
  void (*failed)(redis_conn *c, const char *why);
  /* A pub/sub message ("message" or "smessage") on a connection with
   * pubsub set. The strings are valid during the call. */
  void (*message)(redis_conn *c, const char *channel, size_t clen,
                  const char *msg, size_t len);
  /* On a connection with pubsub set: the server says a subscription
   * ended ("unsubscribe" or "sunsubscribe"), because it was asked to
   * (redis_conn_cmd with fn NULL) or on its own (Redis Cluster: the slot
   * left this server). NULL: ignored. */
  void (*unsubscribed)(redis_conn *c, const char *channel, size_t clen);
  /* A command got an error reply; called after its reply function.
   * NULL: nothing to do. */
  void (*error_reply)(redis_conn *c, const redisReply *reply,
                      const redis_pending *p);
  /* On a connection with keep set, before the reply function of a
   * command that got an error reply: raw[0..len) is the command as sent
   * (valid during the call). Returns 1 when the owner took the command
   * over (sent it to another connection with the same reply function):
   * its reply function is then not called here, nor error_reply. NULL,
   * or 0: the reply goes on as usual. */
  int (*redirect)(redis_conn *c, const redisReply *reply,
                  const redis_pending *p, const char *raw, size_t len);
  /* The poll handle of a closed connection is gone (uv_close finished):
   * *open_handles has been decremented. */
  void (*handle_closed)(redis_conn *c);
} redis_conn_events;

typedef enum {
  REDIS_CONN_DOWN,
  REDIS_CONN_CONNECTING,
  REDIS_CONN_TLS, /* TLS handshake */
  REDIS_CONN_UP
} redis_conn_state;

struct redis_conn {
  /* The owner's, set by redis_conn_init (and tls fields after it). */
  const redis_conn_events *ev;
  void *owner;
  uv_loop_t *loop;
  unsigned *open_handles; /* the owner's count of handles not closed yet */
  int pubsub;             /* a subscriber connection: see message */
  int keep;               /* keep each command until answered: redirect */
  SSL_CTX *ssl_ctx;       /* NULL: plain TCP */
  const char *tls_name;   /* SNI, and the name verified when tls_verify */
  int tls_verify;
  /* The connection's own; the owner may read state. */
  redis_conn_state state;
  int fd;
  uv_poll_t *poll;
  int events; /* UV_READABLE | UV_WRITABLE being watched */
  SSL *ssl;
  redisReader *reader;
  push_buf out; /* [out_head, out_off) sent, [out_off, len) not yet */
  size_t out_off;
  size_t out_head;  /* keep: the bytes of commands already answered */
  redis_pending *q; /* ring: qlen callbacks from qhead */
  size_t qhead, qlen, qcap;
  int64_t ping_sent_ms; /* 0: none outstanding */
};

/* Sets up a closed connection (no allocation). */
void redis_conn_init(redis_conn *c, const redis_conn_events *ev, void *owner,
                     uv_loop_t *loop, unsigned *open_handles, int pubsub);

/* Starts connecting to sa. ready or failed follows (failed may be called
 * before this returns). */
void redis_conn_start(redis_conn *c, const struct sockaddr *sa,
                      socklen_t salen);

/* Queues a command (argc arguments of lens bytes); fn gets its reply with
 * cb and ud. fn NULL: the command has no reply of its own (UNSUBSCRIBE
 * and SUNSUBSCRIBE on a pubsub connection, answered through
 * unsubscribed); not on a keep connection. Returns 0, or -1 when the
 * connection is not up or memory ran out (nothing queued, fn is not
 * called). */
int redis_conn_cmd(redis_conn *c, redis_reply_fn fn, redis_any_fn cb, void *ud,
                   int argc, const char **argv, const size_t *lens);

/* Queues a command that another connection's server refused with a
 * redirect, for p's reply function, callback and argument; p->hops + 1
 * is carried along. Returns as redis_conn_cmd. */
int redis_conn_cmd_again(redis_conn *c, const redis_pending *p, int argc,
                         const char **argv, const size_t *lens);

/* Writes what the socket takes now (normally the loop does it). */
void redis_conn_flush(redis_conn *c);

/* Bytes queued and not written yet. */
size_t redis_conn_unsent(const redis_conn *c);

/* Health: call about once a second. Sends a PING when none is
 * outstanding; fails the connection when a PING (or the connection
 * attempt) has waited more than timeout_ms. */
void redis_conn_ping(redis_conn *c, int64_t now_ms, uint32_t timeout_ms);

/* Closes the socket and calls every pending reply function with NULL
 * (they may queue commands: those fail). The connection can be started
 * again. */
void redis_conn_close(redis_conn *c);

/* Frees the buffers of a closed connection. */
void redis_conn_free(redis_conn *c);

#endif
