/* internal.h - the runtime's private structures, shared by its files. */
#ifndef HERALD_RT_INTERNAL_H
#define HERALD_RT_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "herald/core.h"
#include "herald/rt.h"

/* The system calls of every pass and every write, through syscall(2)
 * rather than libc's wrappers: those are cancellation points, and in a
 * process with more than one thread (herald serve --threads N) each call
 * then enables and disables asynchronous cancellation around the system
 * call, two atomic updates (about 23 instructions per delivery of a
 * fan-out on two loops, callgrind). Nothing in herald cancels a thread.
 * The same returns and errno as the wrappers. */
static inline ssize_t herald__sys_read(int fd, void *buf, size_t n) {
  return (ssize_t)syscall(SYS_read, fd, buf, n);
}

static inline ssize_t herald__sys_readv(int fd, const struct iovec *iov,
                                        int cnt) {
  return (ssize_t)syscall(SYS_readv, fd, iov, cnt);
}

static inline ssize_t herald__sys_write(int fd, const void *buf, size_t n) {
  return (ssize_t)syscall(SYS_write, fd, buf, n);
}

/* send() and sendmsg() with MSG_NOSIGNAL. */
static inline ssize_t herald__sys_send(int fd, const void *buf, size_t n) {
  return (ssize_t)syscall(SYS_sendto, fd, buf, n, MSG_NOSIGNAL, NULL, 0);
}

static inline ssize_t herald__sys_sendmsg(int fd, const struct msghdr *msg) {
  return (ssize_t)syscall(SYS_sendmsg, fd, msg, MSG_NOSIGNAL);
}

/* epoll_wait() as epoll_pwait with no signal mask (every Linux
 * architecture has the latter). */
static inline int herald__sys_epoll_wait(int epfd, struct epoll_event *evs,
                                         int max, int timeout) {
  return (int)syscall(SYS_epoll_pwait, epfd, evs, max, timeout, NULL,
                      (size_t)8);
}

/* Every object registered in a loop's epoll set starts with this header, so
 * one dispatch reaches listeners and connections alike. */
enum io_kind { IO_LISTENER, IO_WS, IO_UV, IO_POST };
typedef struct io_item {
  _Alignas(8) int fd; /* 8-aligned: io_uring tags the low bits (uring.c) */
  uint8_t kind;
  uint8_t events;    /* connections: epoll events registered, EV_IN | EV_OUT;
                        others, io_uring only: the events wanted */
  uint8_t armed;     /* io_uring only: requests in flight (uring.c, A_*) */
  uint8_t big_input; /* connections, epoll: the last read was large, so the
                        next may continue a large frame (ws.c, ws_read) */
} io_item;

/* io_item.armed: a connection's send is in flight in the ring; its output
 * must wait for it (the rest of io_item.armed is uring.c's). */
#define IO_SENDING 64

/* Timer wheel: one libuv timer per loop ticks every WHEEL_TICK_MS; each
 * connection sits in at most one slot, keyed by its next deadline. */
#define WHEEL_TICK_MS 100
#define WHEEL_SLOTS 512

/* The shared read buffer of a loop. Event data points into it during
 * callbacks; nothing outlives a callback in it. */
#define READ_BUFFER_SIZE (256 * 1024)
/* A read of at least this many bytes makes ws_read ask the core, before
 * the next read, whether a large frame's rest can be read in place. */
#define READ_PLACE_HINT 1024
/* Bytes one connection may read in one loop pass while its reads keep
 * filling the buffer (ws_read); then the others get their turn. */
#define READ_PASS_MAX (4u * 1024 * 1024)

/* herald_ws.flags */
enum {
  WS_DIRTY = 1 << 0,        /* on the loop's dirty list */
  WS_WANT_WRITE = 1 << 1,   /* EPOLLOUT registered: the kernel was full */
  WS_CLIENT = 1 << 2,       /* client role */
  WS_OPEN = 1 << 3,         /* on_open was called */
  WS_BACKPRESSURE = 1 << 4, /* a send returned BACKPRESSURE: owe a drain */
  WS_SHUTDOWN = 1 << 5,     /* we sent FIN; draining until EOF */
  WS_DEAD = 1 << 6,         /* fd closed, on_close called; free at reap */
  WS_CONNECTING = 1 << 7,   /* client: DNS or TCP connect in progress */
  WS_READ_PAUSED = 1 << 8,  /* EPOLLIN removed (HTTP response pending) */
  WS_PING_SENT = 1 << 9,    /* keepalive ping awaiting its pong */
  WS_IN_EPOLL = 1 << 10,    /* fd registered */
  WS_RESUME = 1 << 11,      /* on the loop's resume list */
  WS_NEEDS_FLUSH = 1 << 12, /* output queued since the last flush */
  WS_TRIM = 1 << 13,        /* release buffers once the 101 is written */
  WS_IN_WHEEL = 1 << 14,    /* in a timer wheel slot */
  WS_CLOSE_REMOTE = 1 << 15 /* the peer sent a close frame */
};

typedef struct herald_tls_set herald_tls_set;
typedef struct tls_state tls_state;

/* A plain HTTP request being answered (ws_http.c). */
struct herald_http {
  void (*on_gone)(herald_http *h, void *ud); /* streamed responses */
  void *gone_ud;
  int streaming;
  int in_call; /* the handler is running: herald_http_end defers the free */
  int ended;
  herald_ws *ws;  /* NULL once the connection is gone */
  int responded;  /* 0 not yet, 1 answered, -1 handler returned unanswered */
  int keep_alive; /* the request allows another one after it */
};

/* What the connections of one endpoint share: its callbacks, their user
 * data and the runtime limits. A server's routes hold one each and the
 * server one more, with no callbacks, for connections not yet routed (the
 * handshake, plain HTTP); a client's connect state holds its own. It
 * outlives its connections (routes live as long as their server, a
 * client's state is freed after its connection). */
typedef struct ws_endpoint {
  herald_ws_callbacks cb;
  void *ud;
  const herald_rt_limits *limits;
} ws_endpoint;

/* The server or client that made a connection, as the connection's files
 * (ws*.c) reach it: they call server.c and client.c only through these. A
 * hook its side has no use for is NULL. */
typedef struct ws_owner_ops {
  /* Server: the endpoint for a WebSocket upgrade to path, or NULL when
   * none is there. */
  const ws_endpoint *(*route)(herald_ws *ws, herald_str path);
  /* Server: sets the plain-HTTP handler (and *ud); 0 when there is none. */
  int (*http)(herald_ws *ws, herald_http_fn *fn, void **ud);
  /* Client: the TCP connect finished or failed (EPOLLOUT, EPOLLERR or
   * EPOLLHUP while WS_CONNECTING). */
  void (*connected)(herald_ws *ws);
  /* Client: the connection finished and on_close has run (ws_finish). */
  void (*finished)(herald_ws *ws);
  /* Client: the connection is being freed, at the reap. */
  void (*free)(herald_ws *ws);
} ws_owner_ops;

/* What a connection needs only at times: during the handshake, for plain
 * HTTP, while input is split across reads, when it ends, or for its life as
 * a client. Allocated with the connection, freed once the connection is
 * open with nothing in it (so an idle server connection holds none), and
 * allocated again when needed (herald__ws_cold). */
typedef struct ws_cold {
  const ws_owner_ops *owner; /* server.c's or client.c's hooks */
  herald_server *srv;        /* server connections: their server */
  struct client_state *cli;  /* client connections: connect state */

  uint8_t *tail; /* unconsumed input kept between reads */
  size_t tail_len, tail_cap;

  herald_http *http; /* pending plain HTTP request */
  uint8_t *body;     /* head + body being collected */
  size_t body_len, body_need;

  char *subprotocol;
  herald_ws *resume_next; /* loop->resume */

  /* How it ended, for on_close. */
  char *close_reason;
  size_t close_reason_len;
  const char *error;
} ws_cold;

/* 120 bytes, which malloc serves from a 128-byte chunk: with the core's
 * 104-byte herald_conn (a 112-byte chunk) an idle server connection costs
 * 240 bytes of heap (docs/design.md, "Memory per connection"). */
struct herald_ws {
  io_item io;
  uint16_t flags;
  uint16_t close_code;      /* how it ended, for on_close */
  uint16_t ping_window;     /* s (low 16 bits): the ping-rate window */
  uint16_t pings_in_window; /* saturates at 65535 */
  herald_loop *loop;
  herald_conn *conn;
  const ws_endpoint *ep; /* callbacks, their ud, limits */
  void *data;

  herald_ws *prev, *next; /* loop->all */
  herald_ws *dirty_next;  /* loop->dirty */
  herald_ws *wheel_prev, *wheel_next;
  uint64_t deadline;     /* ms, loop time; 0: none */
  uint32_t last_rx;      /* ms, loop time mod 2^32: last bytes received */
  uint32_t ping_sent_at; /* ms, loop time mod 2^32 */

  tls_state *tls; /* NULL: plain TCP */
  ws_cold *cold;  /* NULL: nothing cold held */
};

#if UINTPTR_MAX == UINT64_MAX
/* An idle connection's cost must not grow, with either backend. */
_Static_assert(sizeof(io_item) == 8, "io_item grew");
_Static_assert(sizeof(struct herald_ws) == 120, "herald_ws grew");
#endif

/* What a loop calls in the connections it runs (ws.c), so that loop.c
 * depends on no other file of the runtime: ws.c puts its table in every
 * loop it makes a connection on (herald__ws_new), before the loop can meet
 * one. */
typedef struct loop_conn_ops {
  void (*ready)(herald_ws *ws, uint32_t events); /* epoll reported events */
  /* io_uring: a receive completed with res bytes at data (res > 0), the
   * peer's FIN (0) or an error (-errno). data is the loop's until the call
   * returns. */
  void (*recv)(herald_ws *ws, uint8_t *data, long res);
  /* io_uring: a receive armed at herald_conn_recv_room()'s room completed
   * with n > 0 bytes there (its FIN and errors go to recv). */
  void (*recv_placed)(herald_ws *ws, size_t n);
  void (*write_failed)(herald_ws *ws);        /* io_uring: a send failed */
  void (*timer)(herald_ws *ws, uint64_t now); /* its wheel deadline came */
  void (*flush)(herald_ws *ws);               /* it is on the dirty list */
  void (*resume)(herald_ws *ws); /* it is on the resume list, alive */
  void (*free)(herald_ws *ws);   /* it finished and is reaped */
} loop_conn_ops;

typedef struct post_item {
  void (*fn)(void *arg);
  void *arg;
  struct post_item *next;
} post_item;

struct herald_loop {
  uv_loop_t *uv;
  uv_loop_t uv_own;
  int own_uv;
  int epfd;
  uv_poll_t epoll_watch;
  uv_prepare_t prepare;
  uv_idle_t spin; /* runs while resumes wait: the loop must not sleep */
  uv_timer_t tick;
  int handles_open;

  /* Posts (herald_loop_post, herald_loop_stop; see loop.c "posts"). The
   * list and stopping are under post_mu; the flags are what other threads
   * and the loop read without it. */
  pthread_mutex_t post_mu;
  post_item *posts, *posts_tail;
  post_item *spare;         /* items run, for the next posts to reuse */
  unsigned nspare;          /* at most POST_SPARE_MAX */
  post_item *ran;           /* the loop's: run since it last took the lock */
  int stopping;             /* herald_loop_stop() asked */
  _Atomic int post_pending; /* posts or a stop wait: set under post_mu */
  _Atomic int asleep;       /* 0 only while a driven loop is in a pass */
  _Atomic int signalled;    /* post_io written to and not read since */
  io_item post_io;          /* an eventfd in the loop's set (or ring) */

  /* herald_loop_run() on a loop of our own: our epoll set is the one the
   * thread sleeps in, and libuv's backend fd sits in it (see loop.c). */
  int driving;
  int stop_now; /* herald_loop_stop() reached the loop's thread */
  io_item uv_io;
  void (*pass_fn)(herald_loop *loop, void *ud);
  void *pass_ud;

  uint8_t *rbuf;
  herald_ws *reading; /* the connection whose input rin holds, while read */
  /* Where the input being processed lies: rbuf (epoll), or an io_uring
   * provided buffer. Sends of payloads inside it borrow (ws_send.c). */
  uint8_t *rin;
  size_t rin_len;
  struct loop_uring *ur; /* NULL: the epoll backend (uring.c) */
  herald_ws *all;
  size_t nconns;
  herald_ws *dirty;
  herald_ws *resume;
  herald_ws *reap;
  herald_ws *wheel[WHEEL_SLOTS];
  uint64_t wheel_now; /* ms: the tick processed last */

  const loop_conn_ops *conn_ops; /* set by ws.c: see loop_conn_ops */

  /* Set by the server for its worker loops. */
  herald_server *srv;
  void (*on_idle)(herald_loop *loop); /* nconns fell to 0 while stopping */
  /* An IO_LISTENER item is readable. */
  void (*on_listener)(herald_loop *loop, io_item *io);
  void (*on_tick)(herald_loop *loop); /* after each tick of the wheel */
};

/* loop.c. Calls nothing in the other files: it reaches connections and
 * listeners through loop->conn_ops, on_listener and on_tick. */
/* The loop's time in ms (libuv's, cached once per pass). */
static inline uint64_t herald__now(herald_loop *loop) {
  return uv_now(loop->uv);
}
/* Counts a connection in (+1) or out (-1); the loop stays alive while any
 * connection exists. */
void herald__loop_ref(herald_loop *loop, int delta);
/* Makes herald_loop_run() return at the end of this pass (loop thread). */
void herald__loop_stop_now(herald_loop *loop);
int herald__epoll_add(herald_loop *loop, io_item *io, uint32_t events);
int herald__epoll_mod(herald_loop *loop, io_item *io, uint32_t events);
void herald__epoll_del(herald_loop *loop, io_item *io);
void herald__wheel_set(herald_ws *ws, uint64_t deadline);
/* The IO_POST item was readable: reads the eventfd (the posts run after
 * the batch of events it came in, see loop.c). For uring.c. */
void herald__loop_post_ready(herald_loop *loop);
/* uring.c: the io_uring backend of a loop, reached only from loop.c (its
 * other half). herald__epoll_* call the herald__uring_* counterparts when
 * loop->ur is set; see uring.c for what each costs. */
/* 0, or -errno: not available. defer: the loop's own thread drives it
 * (herald_loop_run on a loop of its own); 0 for a loop attached to the
 * caller's uv_loop_t, which libuv runs (see uring.c, struct loop_uring). */
int herald__uring_new(herald_loop *loop, int defer);
void herald__uring_del(herald_loop *loop);
int herald__uring_fd(herald_loop *loop);
int herald__uring_watch(herald_loop *loop, io_item *io, uint32_t events);
void herald__uring_unwatch(herald_loop *loop, io_item *io);
/* Submits what is queued and waits up to timeout ms (-1: no limit, 0: not
 * at all) for completions, then delivers them. Returns 1 if libuv's fd was
 * ready among them. */
int herald__uring_run(herald_loop *loop, int timeout);
void herald__uring_submit(herald_loop *loop); /* what the pass queued */
/* Waits (up to 1 s) for the requests of reaped connections to complete,
 * freeing them: on the loop's thread, the only one the kernel lets wait on
 * its ring, before another thread may delete the loop. */
void herald__uring_settle(herald_loop *loop);
/* 0 when this kernel runs the backend (probed once per process), else the
 * -errno or herald_err of what failed. */
int herald__uring_available(void);
/* Whether a reaped connection must wait for requests still in flight; the
 * last completion frees it then. */
int herald__uring_hold(herald_loop *loop, herald_ws *ws);
/* Flushes a plain connection's output through the ring: copied out of the
 * core's queue and sent with the next submit. Returns 0 when that is done
 * or waits for the send in flight, 1 when the caller must write it itself
 * (no output, more than a chunk holds, or out of memory). */
int herald__uring_send(herald_ws *ws);
void herald__wheel_remove(herald_ws *ws);
void herald__mark_dirty(herald_ws *ws);

/* A connection: ws.c (its life), ws_event.c (its input's events),
 * ws_send.c (the application's sends) and ws_http.c (plain HTTP
 * requests). They call loop.c and tls.c, and the
 * server or client that made a connection only through its cold part's
 * owner hooks. */
/* ws.c */
/* The cold part, allocated if it is not there; NULL when out of memory. */
ws_cold *herald__ws_cold(herald_ws *ws);
/* ep: the endpoint until a server routes the upgrade (ws_endpoint). */
herald_ws *herald__ws_new(herald_loop *loop, int fd, const herald_config *core,
                          const ws_endpoint *ep);
void herald__ws_start(herald_ws *ws); /* register fd, set timers */
void herald__ws_flush(herald_ws *ws); /* write what the core queued */
/* Keeps the first error, for on_close; out of memory, it reports none. */
void herald__ws_record_error(herald_ws *ws, const char *error);
void herald__ws_abort(herald_ws *ws, const char *error);
/* Re-arms the timer wheel of an open connection: the earliest of its idle,
 * ping and pong deadlines. */
void herald__ws_arm_timers(herald_ws *ws);
/* ws_event.c */
/* Feeds buf[0..len) to the core and delivers the events; what the core
 * leaves unconsumed is kept (cold->tail) for the next read. */
void herald__ws_process(herald_ws *ws, uint8_t *buf, size_t len);
/* Hands the core n payload bytes read in place (herald_conn_recv_room) and
 * delivers the message they complete, if they do. */
void herald__ws_process_placed(herald_ws *ws, size_t n);
/* Puts the connection on its loop's resume list: its paused reading goes on
 * at the end of the pass (loop.c, flush_dirty). */
void herald__ws_mark_resume(herald_ws *ws);
/* Registers the events the connection waits for now. Inline: every flush
 * calls it, and it is nearly always a comparison. */
static inline void herald__ws_update_events(herald_ws *ws) {
  if (!(ws->flags & WS_IN_EPOLL)) {
    return;
  }
  uint8_t want =
      (uint8_t)((ws->flags & WS_READ_PAUSED ? 0 : 1) |
                (ws->flags & (WS_WANT_WRITE | WS_CONNECTING) ? 2 : 0));
  if (want == ws->io.events) {
    return; /* the common case costs no syscall */
  }
  uint32_t ev =
      EPOLLRDHUP | (want & 1 ? EPOLLIN : 0) | (want & 2 ? EPOLLOUT : 0);
  if (herald__epoll_mod(ws->loop, &ws->io, ev) == 0) {
    ws->io.events = want;
  }
}
/* ws_send.c */
void herald__ws_shutdown(herald_ws *ws); /* graceful: 1001 or close */
/* ws_http.c */
/* A plain request arrived (herald__ws_process); its body (Content-Length
 * bytes) follows at buf[0..avail). Returns the body bytes consumed, or -1
 * to stop processing (the rest of the input stays for later). */
long herald__ws_http_request(herald_ws *ws, const herald_request *req,
                             uint8_t *buf, size_t avail);
/* A body that spans reads is being collected (cold->body): takes what it
 * still lacks from buf[0..len) and, once it is complete, calls the handler.
 * Returns the bytes taken, or -1 when all of buf went into the body and it
 * needs more. */
long herald__ws_http_body(herald_ws *ws, const uint8_t *buf, size_t len);
/* The connection is finishing with a request pending (cold->http): the
 * request forgets it, so that a late answer is discarded, and a streamed
 * response's on_gone runs. */
void herald__ws_http_gone(herald_ws *ws);

/* server.c and client.c call the files above; nothing calls them but
 * through ws_owner_ops, loop->on_listener and loop->on_tick. */

#endif
