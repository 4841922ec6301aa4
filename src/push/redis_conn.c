/*
 * redis_conn.c - one Redis connection: socket, TLS, RESP, the reply queue,
 * batched writes and health pings (redis_conn.h has the model).
 */
#include "push/redis_conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void conn_on_poll(uv_poll_t *h, int status, int events);

void redis_conn_init(redis_conn *c, const redis_conn_events *ev, void *owner,
                     uv_loop_t *loop, unsigned *open_handles, int pubsub) {
  memset(c, 0, sizeof *c);
  c->ev = ev;
  c->owner = owner;
  c->loop = loop;
  c->open_handles = open_handles;
  c->pubsub = pubsub;
  c->fd = -1;
  c->state = REDIS_CONN_DOWN;
}

static void fail(redis_conn *c, const char *why) {
  c->ev->failed(c, why);
}

/* The error a socket has pending (SO_ERROR), or 0. */
static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    return 0;
  }
  return err;
}

static void on_handle_closed(uv_handle_t *h) {
  redis_conn *c = h->data;
  free(h);
  (*c->open_handles)--;
  c->ev->handle_closed(c);
}

static void watch(redis_conn *c, int events) {
  if (c->poll != NULL && events != c->events) {
    c->events = events;
    uv_poll_start(c->poll, events, conn_on_poll);
  }
}

void redis_conn_close(redis_conn *c) {
  if (c->poll != NULL) {
    uv_poll_stop(c->poll);
    c->poll->data = c;
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
  c->state = REDIS_CONN_DOWN;
  c->out.len = 0;
  c->out_off = 0;
  c->out_head = 0;
  c->ping_sent_ms = 0;
  c->events = 0;
  /* Callbacks may issue commands (they fail: the state is DOWN). */
  while (c->qlen > 0) {
    redis_pending p = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    p.fn(c, NULL, &p);
  }
  c->qhead = 0;
}

void redis_conn_free(redis_conn *c) {
  free(c->q);
  c->q = NULL;
  c->qcap = 0;
  push_buf_free(&c->out);
}

static int queue_push(redis_conn *c, const redis_pending *p) {
  if (c->qlen == c->qcap) {
    size_t ncap = c->qcap ? c->qcap * 2 : 64;
    redis_pending *n = malloc(ncap * sizeof *n);
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
  c->q[(c->qhead + c->qlen) % c->qcap] = *p;
  c->qlen++;
  return 0;
}

/* Written in RESP straight into the output buffer, with no intermediate
 * allocation: this is every publish's path. pend->len is set here. */
static int cmd_write(redis_conn *c, redis_pending *pend, int argc,
                     const char **argv, const size_t *lens) {
  if (c->state != REDIS_CONN_UP) {
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
  pend->len = b->len - len0;
  if (rv != 0 || (pend->fn != NULL && queue_push(c, pend) != 0)) {
    b->len = len0;
    return -1;
  }
  watch(c, UV_READABLE | UV_WRITABLE);
  return 0;
}

int redis_conn_cmd(redis_conn *c, redis_reply_fn fn, redis_any_fn cb, void *ud,
                   int argc, const char **argv, const size_t *lens) {
  redis_pending p = {fn, cb, ud, 0, 0};
  return cmd_write(c, &p, argc, argv, lens);
}

int redis_conn_cmd_again(redis_conn *c, const redis_pending *p, int argc,
                         const char **argv, const size_t *lens) {
  redis_pending q = *p;
  q.hops++;
  return cmd_write(c, &q, argc, argv, lens);
}

size_t redis_conn_unsent(const redis_conn *c) {
  return c->out.len - c->out_off;
}

void redis_conn_flush(redis_conn *c) {
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
        fail(c, "TLS write failed");
        return;
      }
      w = k;
    } else {
      w = send(c->fd, c->out.p + c->out_off, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) {
          return;
        }
        fail(c, strerror(errno));
        return;
      }
    }
    c->out_off += (size_t)w;
  }
  if (!c->keep) {
    c->out_off = 0;
    push_buf_done(&c->out, 1 << 20);
  }
  watch(c, UV_READABLE);
}

/* Keep mode: the answered command's bytes leave the buffer. Everything
 * answered was sent, so an empty queue means an empty buffer; otherwise
 * the answered prefix is moved out once it is the larger part. */
static void forget_answered(redis_conn *c, size_t len) {
  c->out_head += len;
  if (c->out_head >= c->out.len) {
    c->out.len = c->out_off = c->out_head = 0;
    push_buf_done(&c->out, 1 << 20);
  } else if (c->out_head >= 65536 && c->out_head * 2 >= c->out.len) {
    memmove(c->out.p, c->out.p + c->out_head, c->out.len - c->out_head);
    c->out.len -= c->out_head;
    c->out_off -= c->out_head;
    c->out_head = 0;
  }
}

/* ["unsubscribe" or "sunsubscribe", channel, count]: on a subscriber
 * connection, never the answer to a queued command. */
static int is_unsubscribe(const redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      r->element[0]->type != REDIS_REPLY_STRING ||
      r->element[1]->type != REDIS_REPLY_STRING) {
    return 0;
  }
  const redisReply *k = r->element[0];
  return (k->len == 12 && memcmp(k->str, "sunsubscribe", 12) == 0) ||
         (k->len == 11 && memcmp(k->str, "unsubscribe", 11) == 0);
}

/* A pub/sub message: ["message" or "smessage", channel, payload]. */
static int is_message(const redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      r->element[0]->type != REDIS_REPLY_STRING ||
      r->element[1]->type != REDIS_REPLY_STRING ||
      r->element[2]->type != REDIS_REPLY_STRING) {
    return 0;
  }
  const redisReply *k = r->element[0];
  return (k->len == 8 && memcmp(k->str, "smessage", 8) == 0) ||
         (k->len == 7 && memcmp(k->str, "message", 7) == 0);
}

static void dispatch(redis_conn *c, redisReply *reply) {
  if (c->pubsub && is_message(reply)) {
    c->ev->message(c, reply->element[1]->str, reply->element[1]->len,
                   reply->element[2]->str, reply->element[2]->len);
    return;
  }
  if (c->pubsub && is_unsubscribe(reply)) {
    if (c->ev->unsubscribed != NULL) {
      c->ev->unsubscribed(c, reply->element[1]->str, reply->element[1]->len);
    }
    return;
  }
  if (c->qlen == 0) {
    fail(c, "unexpected reply");
    return;
  }
  redis_pending p = c->q[c->qhead];
  c->qhead = (c->qhead + 1) % c->qcap;
  c->qlen--;
  /* The command's bytes stay where they are until it is forgotten: a
   * callback may append to out, which can move the buffer, so the
   * redirect hook gets them before anything runs. */
  int taken = c->keep && reply->type == REDIS_REPLY_ERROR &&
              c->ev->redirect != NULL &&
              c->ev->redirect(c, reply, &p, c->out.p + c->out_head, p.len);
  if (!taken) {
    p.fn(c, reply, &p);
    if (reply->type == REDIS_REPLY_ERROR && c->ev->error_reply != NULL) {
      c->ev->error_reply(c, reply, &p);
    }
  }
  if (c->keep && c->state == REDIS_CONN_UP) {
    forget_answered(c, p.len);
  }
}

static void conn_read(redis_conn *c) {
  /* One per thread: with several loops (threads) each has its own Redis
   * connections. */
  static _Thread_local char buf[65536];
  for (;;) {
    ssize_t n;
    if (c->ssl != NULL) {
      int k = SSL_read(c->ssl, buf, sizeof buf);
      if (k <= 0) {
        int e = SSL_get_error(c->ssl, k);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
          return;
        }
        fail(c, e == SSL_ERROR_ZERO_RETURN ? "closed by Redis"
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
        fail(c, strerror(errno));
        return;
      }
      if (n == 0) {
        fail(c, "closed by Redis");
        return;
      }
    }
    if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
      fail(c, "out of memory");
      return;
    }
    for (;;) {
      void *reply = NULL;
      if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
        fail(c, "protocol error");
        return;
      }
      if (reply == NULL) {
        break;
      }
      dispatch(c, reply);
      freeReplyObject(reply);
      if (c->state != REDIS_CONN_UP) {
        return; /* failed, or closed by a callback */
      }
    }
    if ((size_t)n < sizeof buf && c->ssl == NULL) {
      return;
    }
  }
}

static void conn_up(redis_conn *c) {
  c->state = REDIS_CONN_UP;
  c->ping_sent_ms = 0;
  c->reader = redisReaderCreate();
  if (c->reader == NULL) {
    fail(c, "out of memory");
    return;
  }
  watch(c, UV_READABLE);
  c->ev->ready(c);
}

static void tls_step(redis_conn *c) {
  int k = SSL_connect(c->ssl);
  if (k == 1) {
    conn_up(c);
    return;
  }
  int e = SSL_get_error(c->ssl, k);
  if (e == SSL_ERROR_WANT_READ) {
    watch(c, UV_READABLE);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    watch(c, UV_WRITABLE);
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
    fail(c, why);
  }
}

static void conn_on_poll(uv_poll_t *h, int status, int events) {
  redis_conn *c = h->data;
  if (status < 0) {
    /* libuv reports any POLLERR as UV_EBADF: the socket's own error says
     * what happened (a refused connect, a reset). */
    int err = socket_error(c->fd);
    fail(c, err ? strerror(err) : uv_strerror(status));
    return;
  }
  switch (c->state) {
  case REDIS_CONN_CONNECTING: {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      fail(c, strerror(err ? err : errno));
      return;
    }
    if (c->ssl_ctx == NULL) {
      conn_up(c);
      return;
    }
    c->ssl = SSL_new(c->ssl_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
        SSL_set_tlsext_host_name(c->ssl, c->tls_name) != 1 ||
        (c->tls_verify && SSL_set1_host(c->ssl, c->tls_name) != 1)) {
      fail(c, "TLS setup failed");
      return;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->state = REDIS_CONN_TLS;
    tls_step(c);
    return;
  }
  case REDIS_CONN_TLS:
    tls_step(c);
    return;
  case REDIS_CONN_UP:
    if (events & UV_READABLE) {
      conn_read(c);
    }
    if (c->state == REDIS_CONN_UP && (events & UV_WRITABLE)) {
      redis_conn_flush(c);
    }
    return;
  case REDIS_CONN_DOWN:
    return;
  }
}

void redis_conn_start(redis_conn *c, const struct sockaddr *sa,
                      socklen_t salen) {
  c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    fail(c, strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  if (connect(c->fd, sa, salen) != 0 && errno != EINPROGRESS) {
    fail(c, strerror(errno));
    return;
  }
  c->poll = malloc(sizeof *c->poll);
  if (c->poll == NULL || uv_poll_init_socket(c->loop, c->poll, c->fd) != 0) {
    free(c->poll);
    c->poll = NULL;
    fail(c, "cannot watch the socket");
    return;
  }
  (*c->open_handles)++;
  c->poll->data = c;
  c->state = REDIS_CONN_CONNECTING;
  c->events = 0;
  watch(c, UV_WRITABLE);
}

static void on_pong(redis_conn *c, redisReply *reply, const redis_pending *p) {
  (void)p;
  if (reply != NULL) {
    c->ping_sent_ms = 0;
  }
}

void redis_conn_ping(redis_conn *c, int64_t now, uint32_t timeout_ms) {
  if (c->state == REDIS_CONN_DOWN) {
    return;
  }
  /* Connecting or pinging for too long: Redis is not answering. */
  if (c->state != REDIS_CONN_UP) {
    if (c->ping_sent_ms == 0) {
      c->ping_sent_ms = now;
    } else if (now - c->ping_sent_ms > timeout_ms) {
      fail(c, "connect timed out");
    }
    return;
  }
  if (c->ping_sent_ms != 0) {
    if (now - c->ping_sent_ms > timeout_ms) {
      fail(c, "no answer to PING");
    }
    return;
  }
  const char *argv[1] = {"PING"};
  size_t lens[1] = {4};
  if (redis_conn_cmd(c, on_pong, NULL, NULL, 1, argv, lens) == 0) {
    c->ping_sent_ms = now;
  }
}
