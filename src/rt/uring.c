/*
 * uring.c - the io_uring backend of a loop: loop.c's other half, used
 * instead of the epoll set when the loop was made with it.
 *
 * What it replaces, and what it keeps:
 *   - A plain connection receives with one multishot recv into the loop's
 *     provided buffer ring (64 KiB growing to 1 MiB, shared by every
 *     connection of the loop: an idle connection holds none; consumed
 *     incrementally where the kernel can). Each completion is delivered to
 *     ws.c (loop_conn_ops.recv) and the buffer goes back to the ring as
 *     soon as the kernel is done with it. There is no read() at all.
 *   - While the core reassembles a large frame, the rest of it is received
 *     with one-shot recvs straight into the message buffer
 *     (herald_conn_recv_room; loop_conn_ops.recv_placed), as epoll's
 *     readv does: no pool buffer holds it, nothing copies it.
 *   - Output of up to URING_SEND_MAX bytes is copied out of the core's
 *     queue into a send chunk (small ones reused, not allocated per
 *     send) and sent with the next submit, one send in flight per
 *     connection; larger output goes out with sendmsg() at once as with
 *     epoll (and a one-shot POLLOUT when the kernel is full). The core's
 *     backpressure and drain see the bytes in flight as written.
 *   - Everything else that epoll watched (listeners, libuv's backend fd,
 *     TLS connections, a client's connect) gets a one-shot poll, armed
 *     again after each completion while it is still wanted: level-triggered
 *     like the epoll set, without epoll_ctl.
 *   - The thread sleeps in io_uring_enter(), which also submits what the
 *     pass queued (polls armed, receives paused or resumed, cancels).
 *
 * Requests carry their item and a tag in user_data (items are 8-aligned).
 * io_item.armed says which requests of an item are in flight, so that no
 * second one of a kind is armed while one is, and so that a connection
 * reaped with requests still in flight is held until the last completes.
 * A connection's end cancels its requests by user_data; the descriptor is
 * closed at once (the requests hold their own reference to the file until
 * they complete, which the cancel makes happen at the next submit).
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rt/internal.h"

#define URING_ENTRIES 1024     /* submission queue */
#define URING_CQ_ENTRIES 16384 /* completion queue */
/* The loop's provided buffers. With incremental consumption (Linux 6.12) a
 * receive takes only the bytes it needs from a buffer, so a few large ones
 * serve small and large messages alike (URING_BUF_LARGE); without it every
 * receive takes a whole buffer, so all are URING_BUF_SMALL.
 *
 * The pool starts with URING_POOL_START in small buffers. Its pages are
 * the memory an idle server's receives touch (the handshakes walk through
 * it, each taking the next bytes): epoll reads every request into the
 * first page of one read buffer, and a 4 MiB pool made each of 15,000 idle
 * connections cost 150 bytes more, a 256 KiB one 17, 64 KiB 3 (16 KiB
 * was too small for a burst of handshakes: it grew). When a receive finds
 * no buffer free (ENOBUFS: the loop has not yet taken what arrived), the
 * pool doubles, in large buffers, at most once per pass, up to
 * URING_POOL_MAX; the first ones are freed as they come back. At the limit
 * a receive that finds none waits until buffers come back: it is armed
 * again with the next submit, after the completions that hold them were
 * delivered. The pool does not shrink. */
#define URING_POOL_START (64u * 1024) /* in URING_BUF_FIRST */
#define URING_BUF_FIRST (16 * 1024)
/* 1 MiB: a pool larger than the cache costs more than the receives that
 * wait: 200 KiB echoes on 20 connections took 226 µs of server CPU each
 * with a 16 MiB limit, 168 with 1 MiB (epoll 166); 64 KiB on 40
 * connections x 2, 66 and 57 (epoll 51). */
#define URING_POOL_MAX (1u << 20)
#define URING_BUF_SMALL (16 * 1024)
#define URING_BUF_LARGE (128 * 1024)
/* Ring entries: at least the buffers the pool can hold at once. */
#define URING_RING_INC 256
#define URING_RING 1024
_Static_assert(URING_POOL_START / URING_BUF_FIRST +
                       URING_POOL_MAX / URING_BUF_LARGE <=
                   URING_RING_INC,
               "the incremental pool's ring is too small");
_Static_assert(URING_POOL_MAX / URING_BUF_SMALL <= URING_RING &&
                   URING_RING_INC <= URING_RING,
               "the pool's ring is too small");
#define URING_BGID 0
/* Not in liburing 2.3's headers: the kernel's values. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif
#define URING_BATCH 1024 /* completions delivered per pass at most */
/* Output up to this size is copied into a send chunk and sent through the
 * ring with the next submit; more goes out with sendmsg() at once, as with
 * epoll (a copy of a large message costs more than the call it saves). */
#define URING_SEND_MAX (16 * 1024)
/* Send chunks for output of up to URING_CHUNK_SMALL bytes (most messages)
 * are made that size and kept for reuse when their send completes, at most
 * URING_CHUNK_SPARES per loop (128 KiB): no malloc/free per message. */
#define URING_CHUNK_SMALL 2048
#define URING_CHUNK_SPARES 64
/* A receive armed while the core reassembles a frame with at least this
 * much of its payload still to come (herald_conn_recv_room) is a one-shot
 * recv straight into the message buffer, not the multishot one into the
 * pool: the rest of the frame is then neither held in pool buffers nor
 * copied out of them. Below it the pool's copy costs less than a second
 * kind of request would. */
#define URING_PLACE_MIN (16 * 1024)
/* Connections whose multishot receive ended a pass's batch mid-frame with
 * URING_PLACE_MIN or more to come: their receive is cancelled, to be armed
 * again in place (herald__uring_run). At most this many per pass; the
 * others go on through the pool. */
#define URING_PLACE_CANDIDATES 64

/* user_data tags (low 3 bits). 0 is ours and carries nothing (cancels).
 * T_SEND carries a send_chunk, the others an io_item. */
enum { T_IN = 1, T_OUT = 2, T_RECV = 3, T_SEND = 4 };

/* io_item.armed */
enum {
  A_IN = 1,            /* one-shot POLLIN in flight */
  A_OUT = 2,           /* one-shot POLLOUT in flight */
  A_RECV = 4,          /* a receive in flight (multishot or placed) */
  A_RECV_CANCEL = 8,   /* ... and its cancel was sent */
  A_HELD = 16,         /* reaped: freed when nothing is in flight */
  A_EOF = 32,          /* the peer's FIN came while reading was paused */
  A_SEND = IO_SENDING, /* a send in flight (internal.h: ws.c tests it) */
  A_PLACE = 128        /* the receive in flight is placed (arm_recv) */
};
#define A_INFLIGHT (A_IN | A_OUT | A_RECV | A_SEND)

/* The bytes of one send in flight: the connection's output copied out of
 * the core's queue (which may move it), kept until the send completes.
 * Large ones are allocated to the size of the output: a pool of
 * full-size chunks held up to 16 KiB per connection while a thousand
 * handshakes were in flight, and malloc kept that memory afterwards. Small
 * ones (URING_CHUNK_SMALL) go back to a spare list per loop, bounded by
 * URING_CHUNK_SPARES whatever the number of connections. */
typedef struct send_chunk {
  union {
    herald_ws *ws;           /* the connection, while in use */
    struct send_chunk *next; /* the next spare, while spare */
  };
  uint32_t len, off; /* bytes in data, bytes sent so far */
  uint32_t cap;      /* bytes data can hold */
  uint8_t data[];
} send_chunk;

struct loop_uring {
  struct io_uring ring;
  /* The ring runs completions' work only when its thread enters the kernel
   * (IORING_SETUP_DEFER_TASKRUN, with SINGLE_ISSUER): made disabled, it is
   * enabled by the first submit, which makes that thread its only issuer
   * (the loop's; a server makes its workers' loops on the main thread).
   * Only for a loop that herald_loop_run() drives: a loop attached to the
   * caller's uv_loop_t sleeps in libuv's epoll_wait(), and what would wake
   * it there for deferred work, the eventfd below, is signalled late: Linux
   * 6.18 posts that signal after an RCU grace period, 12-17 ms after the
   * data came (100 round trips took 1.3 s; rt_test's test_run_modes_wake).
   * Without defer the kernel runs the work when the thread is woken, and
   * the ring's own fd, which libuv watches then, becomes readable. */
  int defer;
  int enabled;
  pthread_t issuer;
  /* defer: what libuv watches while it runs a driven loop itself (a nested
   * uv_run()): the ring's fd does not become readable for deferred work,
   * this eventfd registered with the ring does (late, above). -1 without
   * defer. */
  int evfd;
  struct io_uring_buf_ring *br;
  uint8_t *buf[URING_RING]; /* by buffer id; NULL past nbufs */
  herald_ws *held;          /* reaped connections waiting for completions */
  int inc;                  /* buffers consumed incrementally */
  unsigned entries;         /* of the ring: URING_RING_INC or URING_RING */
  unsigned nbufs;           /* buffer ids used so far */
  size_t large;             /* what the pool grows by: URING_BUF_LARGE (inc) */
  size_t pool_bytes;        /* in buffers now */
  uint32_t len[URING_RING]; /* of each buffer */
  uint16_t freeb[URING_RING]; /* ids of buffers freed, for reuse */
  unsigned nfree;
  uint32_t off[URING_RING]; /* inc: bytes of each buffer delivered so far */
  uint64_t enobufs;         /* receives that found no buffer free */
  uint64_t placed;          /* placed receives armed */
  uint64_t pass, grown;     /* herald__uring_run calls; the last that grew */
  /* This pass's multishot receives of READ_PLACE_HINT or more bytes: those
   * that end it mid-frame switch to placed receives (herald__uring_run). */
  herald_ws *cand[URING_PLACE_CANDIDATES];
  unsigned ncand;
  send_chunk *spare; /* small send chunks for reuse (URING_CHUNK_SPARES) */
  unsigned nspare;
};

static void release_held(herald_loop *loop, herald_ws *ws);

static uint64_t ud_of(io_item *io, unsigned tag) {
  return (uint64_t)(uintptr_t)io | tag;
}

/* Before the ring's first submit: enables it, making this thread its
 * issuer. Returns 0, or -errno. */
static int ring_enable(struct loop_uring *u) {
  if (u->enabled) {
    return 0;
  }
  if (u->defer) {
    /* liburing 2.3 declares io_uring_enable_rings() but does not export
     * it: the system call itself. */
    if (syscall(__NR_io_uring_register, u->ring.ring_fd,
                IORING_REGISTER_ENABLE_RINGS, NULL, 0) != 0) {
      return -errno;
    }
  }
  u->enabled = 1;
  u->issuer = pthread_self();
  return 0;
}

static void ring_submit(struct loop_uring *u) {
  if (ring_enable(u) == 0) {
    io_uring_submit(&u->ring);
  }
}

/* A submission entry; when the queue is full, what it holds is submitted
 * first. NULL only if the kernel refuses that too. */
static struct io_uring_sqe *get_sqe(struct loop_uring *u) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (sqe == NULL) {
    ring_submit(u);
    sqe = io_uring_get_sqe(&u->ring);
  }
  return sqe;
}

/* A plain connection past its connect receives through the buffer ring;
 * everything else is polled. */
static int recv_mode(io_item *io) {
  if (io->kind != IO_WS) {
    return 0;
  }
  herald_ws *ws = (herald_ws *)io;
  return ws->tls == NULL && !(ws->flags & WS_CONNECTING);
}

static void arm_poll(struct loop_uring *u, io_item *io, unsigned tag) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (sqe == NULL) {
    return;
  }
  unsigned mask = tag == T_OUT ? POLLOUT : POLLIN;
  if (io->kind == IO_WS && tag == T_IN) {
    mask |= POLLRDHUP;
  }
  io_uring_prep_poll_add(sqe, io->fd, mask);
  io_uring_sqe_set_data64(sqe, ud_of(io, tag));
  io->armed |= tag == T_OUT ? A_OUT : A_IN;
}

/* Arms the receive of a plain connection (recv_mode): multishot into the
 * pool, or, while a large frame is being reassembled, one recv of at most
 * the frame's rest into the core's message buffer. That buffer stays where
 * it is until the core is told of the bytes (herald_conn_recv_placed, only
 * from the completion) or the connection is freed, which waits for the
 * completion (herald__uring_hold). */
static void arm_recv(struct loop_uring *u, io_item *io) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (sqe == NULL) {
    return;
  }
  herald_ws *ws = (herald_ws *)io;
  size_t room = 0;
  uint8_t *place = NULL;
  if (!(io->armed & A_EOF) && !(ws->flags & WS_SHUTDOWN)) {
    place = herald_conn_recv_room(ws->conn, &room);
  }
  if (io->armed & A_EOF) {
    /* Reading resumed after the FIN came: a no-op completes as a receive
     * of 0 bytes, so ws.c sees the end in order. */
    io_uring_prep_nop(sqe);
    io->armed &= (uint8_t)~A_EOF;
  } else if (place != NULL && room >= URING_PLACE_MIN) {
    io_uring_prep_recv(sqe, io->fd, place, room, 0);
    io->armed |= A_PLACE;
    u->placed++;
  } else {
    io_uring_prep_recv_multishot(sqe, io->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = URING_BGID;
  }
  io_uring_sqe_set_data64(sqe, ud_of(io, T_RECV));
  io->armed |= A_RECV;
}

static void cancel(struct loop_uring *u, io_item *io, unsigned tag) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (sqe == NULL) {
    return;
  }
  io_uring_prep_cancel64(sqe, ud_of(io, tag), 0);
  io_uring_sqe_set_data64(sqe, 0);
}

int herald__uring_watch(herald_loop *loop, io_item *io, uint32_t events) {
  struct loop_uring *u = loop->ur;
  uint8_t want =
      (uint8_t)((events & EPOLLIN ? 1 : 0) | (events & EPOLLOUT ? 2 : 0));
  if (io->kind != IO_WS) {
    io->events = want; /* a connection's callers set it themselves */
  }
  int rm = recv_mode(io);
  if (want & 1) {
    if (rm && !(io->armed & A_RECV)) {
      arm_recv(u, io);
    } else if (!rm && !(io->armed & A_IN)) {
      arm_poll(u, io, T_IN);
    }
  } else if (rm && (io->armed & A_RECV) && !(io->armed & A_RECV_CANCEL)) {
    /* Reading paused: stop receiving. What completes before the cancel
     * does is kept by ws.c for the resume. */
    cancel(u, io, T_RECV);
    io->armed |= A_RECV_CANCEL;
  }
  if ((want & 2) && !(io->armed & A_OUT)) {
    arm_poll(u, io, T_OUT);
  }
  return 0;
}

void herald__uring_unwatch(herald_loop *loop, io_item *io) {
  struct loop_uring *u = loop->ur;
  io->events = 0;
  io->armed &= (uint8_t)~A_EOF;
  if (io->armed & A_IN) {
    cancel(u, io, T_IN);
  }
  if (io->armed & A_OUT) {
    cancel(u, io, T_OUT);
  }
  if ((io->armed & A_RECV) && !(io->armed & A_RECV_CANCEL)) {
    cancel(u, io, T_RECV);
    io->armed |= A_RECV_CANCEL;
  }
  if ((io->armed & A_SEND) && io->fd >= 0) {
    /* A send's user_data is its chunk, which only the ring knows: cancel
     * by descriptor, submitted now, while the descriptor is still this
     * socket's (the caller closes it next). A send to a peer that reads
     * nothing would otherwise hold the connection for ever. */
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe) {
      io_uring_prep_cancel_fd(sqe, io->fd, IORING_ASYNC_CANCEL_ALL);
      io_uring_sqe_set_data64(sqe, 0);
      ring_submit(u);
    }
  }
}

/* ---- sends -------------------------------------------------------------- */

static send_chunk *chunk_get(struct loop_uring *u, size_t total) {
  if (total <= URING_CHUNK_SMALL && u->spare != NULL) {
    send_chunk *c = u->spare;
    u->spare = c->next;
    u->nspare--;
    return c;
  }
  size_t cap = total <= URING_CHUNK_SMALL ? URING_CHUNK_SMALL : total;
  send_chunk *c = malloc(sizeof(*c) + cap);
  if (c != NULL) {
    c->cap = (uint32_t)cap;
  }
  return c;
}

static void chunk_put(struct loop_uring *u, send_chunk *c) {
  if (c->cap == URING_CHUNK_SMALL && u->nspare < URING_CHUNK_SPARES) {
    c->next = u->spare;
    u->spare = c;
    u->nspare++;
    return;
  }
  free(c);
}

static void submit_send(send_chunk *c, struct io_uring_sqe *sqe) {
  herald_ws *ws = c->ws;
  io_uring_prep_send(sqe, ws->io.fd, c->data + c->off, c->len - c->off,
                     MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | T_SEND);
  ws->io.armed |= A_SEND;
}

int herald__uring_send(herald_ws *ws) {
  if (ws->io.armed & A_SEND) {
    return 0; /* its completion flushes again */
  }
  size_t total = herald_conn_output_size(ws->conn);
  if (total == 0 || total > URING_SEND_MAX) {
    return 1; /* nothing (the caller's loop clears its flags), or large */
  }
  struct loop_uring *u = ws->loop->ur;
  struct io_uring_sqe *sqe = get_sqe(u); /* first: nothing to undo then */
  if (sqe == NULL) {
    return 1;
  }
  send_chunk *c = chunk_get(u, total);
  if (c == NULL) {
    io_uring_prep_nop(sqe); /* the entry is taken: make it harmless */
    io_uring_sqe_set_data64(sqe, 0);
    return 1;
  }
  c->ws = ws;
  c->len = c->off = 0;
  struct iovec iov[64];
  int cnt;
  while ((cnt = herald_conn_output(ws->conn, iov, 64)) > 0) {
    size_t n = 0;
    for (int i = 0; i < cnt && c->len + iov[i].iov_len <= total; i++) {
      memcpy(c->data + c->len, iov[i].iov_base, iov[i].iov_len);
      c->len += (uint32_t)iov[i].iov_len;
      n += iov[i].iov_len;
    }
    if (n == 0) {
      break; /* a pong the output just added went over: next send */
    }
    herald_conn_output_consumed(ws->conn, n);
  }
  if (c->len == 0) {
    chunk_put(u, c);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, 0);
    return 1;
  }
  submit_send(c, sqe);
  return 0;
}

/* A send completed: the rest of a short one goes next, else the output
 * queued meanwhile is flushed. */
static void send_done(herald_loop *loop, send_chunk *c, int res) {
  struct loop_uring *u = loop->ur;
  herald_ws *ws = c->ws;
  ws->io.armed &= (uint8_t)~A_SEND;
  if (ws->io.armed & A_HELD) {
    chunk_put(u, c);
    if (!(ws->io.armed & A_INFLIGHT)) {
      release_held(loop, ws);
    }
    return;
  }
  if (ws->flags & WS_DEAD) {
    chunk_put(u, c);
    return;
  }
  if (res > 0 && c->off + (uint32_t)res < c->len) {
    c->off += (uint32_t)res;
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe) {
      submit_send(c, sqe);
      return;
    }
    res = -ENOMEM; /* the rest cannot go: the stream would have a hole */
  }
  chunk_put(u, c);
  if (res < 0) {
    loop->conn_ops->write_failed(ws);
    return;
  }
  loop->conn_ops->flush(ws);
}

int herald__uring_hold(herald_loop *loop, herald_ws *ws) {
  if (!(ws->io.armed & A_INFLIGHT)) {
    return 0;
  }
  struct loop_uring *u = loop->ur;
  ws->io.armed |= A_HELD;
  ws->prev = NULL;
  ws->next = u->held;
  if (u->held) {
    u->held->prev = ws;
  }
  u->held = ws;
  return 1;
}

static void release_held(herald_loop *loop, herald_ws *ws) {
  struct loop_uring *u = loop->ur;
  if (ws->prev) {
    ws->prev->next = ws->next;
  } else {
    u->held = ws->next;
  }
  if (ws->next) {
    ws->next->prev = ws->prev;
  }
  loop->conn_ops->free(ws);
}

static void give_back(struct loop_uring *u, unsigned bid) {
  if (u->len[bid] < u->large && u->pool_bytes > URING_POOL_START) {
    /* A first buffer of a pool that grew: large ones replace it. */
    free(u->buf[bid]);
    u->buf[bid] = NULL;
    u->pool_bytes -= u->len[bid];
    u->freeb[u->nfree++] = (uint16_t)bid;
    return;
  }
  io_uring_buf_ring_add(u->br, u->buf[bid], u->len[bid], (unsigned short)bid,
                        io_uring_buf_ring_mask(u->entries), 0);
  io_uring_buf_ring_advance(u->br, 1);
}

/* Adds buffers of size to the pool until it holds bytes (at most
 * URING_POOL_MAX). Returns the buffers added; fewer when out of memory. */
static unsigned pool_grow(struct loop_uring *u, size_t bytes, size_t size) {
  if (bytes > URING_POOL_MAX) {
    bytes = URING_POOL_MAX;
  }
  unsigned added = 0;
  while (u->pool_bytes + size <= bytes &&
         (u->nfree > 0 || u->nbufs < u->entries)) {
    uint8_t *b = malloc(size);
    if (b == NULL) {
      break;
    }
    unsigned bid = u->nfree > 0 ? u->freeb[--u->nfree] : u->nbufs++;
    u->buf[bid] = b;
    u->len[bid] = (uint32_t)size;
    u->off[bid] = 0;
    u->pool_bytes += size;
    io_uring_buf_ring_add(u->br, b, (unsigned)size, (unsigned short)bid,
                          io_uring_buf_ring_mask(u->entries), (int)added);
    added++;
  }
  if (added) {
    io_uring_buf_ring_advance(u->br, (int)added);
  }
  return added;
}

/* One completion. Returns 1 if it was libuv's fd. */
static int deliver(herald_loop *loop, const struct io_uring_cqe *cqe) {
  struct loop_uring *u = loop->ur;
  uint64_t ud = cqe->user_data;
  unsigned tag = (unsigned)(ud & 7);
  if (tag == 0) {
    return 0;
  }
  int res = cqe->res;
  if (tag == T_SEND) {
    send_done(loop, (send_chunk *)(uintptr_t)(ud & ~(uint64_t)7), res);
    return 0;
  }
  io_item *io = (io_item *)(uintptr_t)(ud & ~(uint64_t)7);
  int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  int placed = tag == T_RECV && (io->armed & A_PLACE);
  uint8_t *data = NULL;
  int bid = -1;
  if (cqe->flags & IORING_CQE_F_BUFFER) {
    bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    data = u->buf[bid];
    if (u->inc) {
      /* The bytes follow those this buffer delivered before; while the
       * kernel goes on filling it, it is not ours to give back. */
      data += u->off[bid];
      if (cqe->flags & IORING_CQE_F_BUF_MORE) {
        u->off[bid] += res > 0 ? (uint32_t)res : 0;
        bid = -1;
      } else {
        u->off[bid] = 0;
      }
    }
  }
  if (!more) {
    io->armed &= (uint8_t) ~(tag == T_IN    ? A_IN
                             : tag == T_OUT ? A_OUT
                                            : A_RECV | A_RECV_CANCEL | A_PLACE);
  }
  if (io->armed & A_HELD) {
    if (bid >= 0) {
      give_back(u, (unsigned)bid);
    }
    if (!(io->armed & A_INFLIGHT)) {
      release_held(loop, (herald_ws *)io);
    }
    return 0;
  }
  if (io->kind == IO_UV || io->kind == IO_POST) {
    if (io->kind == IO_POST && res > 0) {
      herald__loop_post_ready(loop); /* read before the poll is armed */
    }
    if ((io->events & 1) && !(io->armed & A_IN)) {
      arm_poll(u, io, T_IN);
    }
    return io->kind == IO_UV && res > 0;
  }
  if (io->kind == IO_LISTENER) {
    if (res > 0 && (io->events & 1)) {
      loop->on_listener(loop, io);
    }
    if ((io->events & 1) && !(io->armed & A_IN) && io->fd >= 0) {
      arm_poll(u, io, T_IN);
    }
    return 0;
  }
  herald_ws *ws = (herald_ws *)io;
  if (tag == T_RECV && res == -ENOBUFS) {
    /* Every buffer holds bytes not yet delivered: twice as many, up to
     * the limit, once per pass however many receives found none; the
     * receive is armed again below either way. */
    u->enobufs++;
    if (u->grown != u->pass) {
      u->grown = u->pass;
      (void)pool_grow(u, u->pool_bytes * 2 + u->large, u->large);
    }
  }
  if (tag == T_RECV) {
    if (!(ws->flags & WS_DEAD) && res != -ENOBUFS && res != -ECANCELED) {
      if ((ws->flags & WS_READ_PAUSED) && res == 0) {
        io->armed |= A_EOF; /* delivered when reading resumes */
      } else if (placed && res > 0) {
        loop->conn_ops->recv_placed(ws, (size_t)res);
      } else {
        loop->conn_ops->recv(ws, data, res);
        if (more && res >= READ_PLACE_HINT &&
            u->ncand < URING_PLACE_CANDIDATES) {
          u->cand[u->ncand++] = ws; /* perhaps a large frame's start */
        }
      }
    }
    if (bid >= 0) {
      give_back(u, (unsigned)bid);
    }
  } else if (!(ws->flags & WS_DEAD) && res >= 0) {
    uint32_t ev = (uint32_t)res;
    if (tag == T_OUT && recv_mode(io)) {
      ev = EPOLLOUT; /* errors show in the write, or in the receive */
    }
    loop->conn_ops->ready(ws, ev);
  }
  if (ws->flags & WS_DEAD) {
    return 0;
  }
  /* Armed again while still wanted: one-shot polls, and a receive that
   * ended (out of buffers, or cancelled by a pause since lifted). */
  if ((io->events & 2) && !(io->armed & A_OUT)) {
    arm_poll(u, io, T_OUT);
  }
  if (io->events & 1) {
    if (recv_mode(io)) {
      if (!(io->armed & A_RECV)) {
        arm_recv(u, io);
      }
    } else if (!(io->armed & A_IN)) {
      arm_poll(u, io, T_IN);
    }
  }
  return 0;
}

/* After a pass's completions: a multishot receive that left a large frame
 * with URING_PLACE_MIN or more still to come is cancelled; its last
 * completion arms the receive again, in place (arm_recv), with the next
 * submit. Checked once the batch is delivered, not at each completion: the
 * frame's rest often came in the same batch. The candidates are alive: a
 * connection is freed only when reaped, after this. */
static void place_candidates(struct loop_uring *u) {
  for (unsigned i = 0; i < u->ncand; i++) {
    herald_ws *ws = u->cand[i];
    size_t room = 0;
    if ((ws->io.armed & (A_RECV | A_RECV_CANCEL | A_PLACE | A_HELD)) !=
            A_RECV ||
        (ws->flags & (WS_DEAD | WS_SHUTDOWN | WS_READ_PAUSED)) ||
        herald_conn_recv_room(ws->conn, &room) == NULL ||
        room < URING_PLACE_MIN) {
      continue;
    }
    cancel(u, &ws->io, T_RECV);
    ws->io.armed |= A_RECV_CANCEL;
  }
  u->ncand = 0;
}

int herald__uring_run(herald_loop *loop, int timeout) {
  struct loop_uring *u = loop->ur;
  struct io_uring_cqe *cqe = NULL;
  if (ring_enable(u) != 0 ||
      (u->defer && !pthread_equal(u->issuer, pthread_self()))) {
    /* Not the ring's thread (a loop deleted by another thread than the one
     * that ran it): the kernel would refuse; what was posted is delivered. */
  } else if (timeout == 0 || io_uring_cq_ready(&u->ring)) {
    if (u->evfd >= 0 && !loop->driving) {
      /* Nested: cleared before the kernel runs the deferred work, so that
       * work queued after this wakes libuv again. (Driven, nothing watches
       * it: its count just grows, and the next nested pass clears it.) */
      uint64_t v;
      (void)!read(u->evfd, &v, sizeof(v));
    }
    if (u->defer) {
      /* Completions' work runs only when this thread enters. */
      io_uring_submit_and_get_events(&u->ring);
    } else if (io_uring_sq_ready(&u->ring)) {
      /* Nothing to wait for: a syscall only if there is something queued. */
      io_uring_submit(&u->ring);
    }
  } else if (timeout < 0) {
    io_uring_submit_and_wait(&u->ring, 1);
  } else {
    struct __kernel_timespec ts = {.tv_sec = timeout / 1000,
                                   .tv_nsec = (timeout % 1000) * 1000000L};
    io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
  }
  uv_update_time(loop->uv);
  u->pass++;
  int uv_ready = 0;
  unsigned n = 0;
  while (n < URING_BATCH && io_uring_peek_cqe(&u->ring, &cqe) == 0) {
    struct io_uring_cqe c = *cqe;
    io_uring_cqe_seen(&u->ring, cqe);
    n++;
    uv_ready |= deliver(loop, &c);
  }
  place_candidates(u);
  return uv_ready;
}

void herald__uring_submit(herald_loop *loop) {
  ring_submit(loop->ur);
}

HERALD_API void herald_loop_io_stats_get(const herald_loop *loop,
                                         herald_loop_io_stats *out) {
  memset(out, 0, sizeof(*out));
  const struct loop_uring *u = loop->ur;
  if (u != NULL) {
    out->recv_pool_bytes = u->pool_bytes;
    out->recv_pool_waits = u->enobufs;
    out->recv_placed = u->placed;
  }
}

int herald__uring_fd(herald_loop *loop) {
  return loop->ur->evfd >= 0 ? loop->ur->evfd : loop->ur->ring.ring_fd;
}

/* ---- set-up ------------------------------------------------------------- */

/* With defer, the ring defers completions' work to its one thread's next
 * entry into the kernel (Linux 6.1), and starts disabled (see ring_enable);
 * *defer says whether the kernel took that. */
static int ring_init(struct io_uring *ring, int *defer) {
  struct io_uring_params p;
  memset(&p, 0, sizeof(p));
  p.flags =
      IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
  if (*defer) {
    p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
               IORING_SETUP_R_DISABLED;
  }
  p.cq_entries = URING_CQ_ENTRIES;
  int rv = io_uring_queue_init_params(URING_ENTRIES, ring, &p);
  if (rv == -EINVAL && *defer) { /* before 6.1 */
    *defer = 0;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
              IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = URING_CQ_ENTRIES;
    rv = io_uring_queue_init_params(URING_ENTRIES, ring, &p);
  }
  if (rv == -EINVAL) { /* an older kernel: without the optional flags */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = URING_CQ_ENTRIES;
    rv = io_uring_queue_init_params(URING_ENTRIES, ring, &p);
  }
  return rv;
}

/* Whether this kernel has what the backend needs: a ring, a provided
 * buffer ring (5.19) and multishot receive (6.0). Tried once per process,
 * on a socket pair. */
static int probe_result = 1; /* 1: not tried yet */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static void probe(void) {
  struct io_uring ring;
  int defer = 0;
  int rv = ring_init(&ring, &defer);
  if (rv != 0) {
    probe_result = rv;
    return;
  }
  size_t rsz = 2 * sizeof(struct io_uring_buf);
  void *brmem = NULL;
  uint8_t space[2][64];
  int sv[2] = {-1, -1};
  rv = -ENOMEM;
  if (posix_memalign(&brmem, 4096, 4096) != 0) {
    goto out;
  }
  memset(brmem, 0, 4096);
  struct io_uring_buf_reg reg = {
      .ring_addr = (uintptr_t)brmem, .ring_entries = 2, .bgid = 1};
  (void)rsz;
  rv = io_uring_register_buf_ring(&ring, &reg, 0);
  if (rv != 0) {
    goto out;
  }
  struct io_uring_buf_ring *br = brmem;
  io_uring_buf_ring_init(br);
  for (int i = 0; i < 2; i++) {
    io_uring_buf_ring_add(br, space[i], sizeof(space[i]), (unsigned short)i,
                          io_uring_buf_ring_mask(2), i);
  }
  io_uring_buf_ring_advance(br, 2);
  rv = -errno;
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    goto out;
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = 1;
  io_uring_sqe_set_data64(sqe, 7);
  if (write(sv[1], "x", 1) != 1) {
    rv = -EIO;
    goto out;
  }
  struct io_uring_cqe *cqe = NULL;
  rv = io_uring_submit_and_wait(&ring, 1);
  if (rv >= 0) {
    rv = io_uring_peek_cqe(&ring, &cqe);
  }
  if (rv == 0) {
    /* Multishot works if the receive stays armed after delivering. */
    rv = cqe->res == 1 && (cqe->flags & IORING_CQE_F_MORE) ? 0 : -ENOSYS;
  }
out:
  if (sv[0] >= 0) {
    close(sv[0]);
    close(sv[1]);
  }
  io_uring_queue_exit(&ring); /* cancels the receive, then unregisters */
  free(brmem);
  probe_result = rv;
}

int herald__uring_available(void) {
  pthread_once(&probe_once, probe);
  return probe_result;
}

int herald__uring_new(herald_loop *loop, int defer) {
  int rv = herald__uring_available();
  if (rv != 0) {
    return rv;
  }
  struct loop_uring *u = calloc(1, sizeof(*u));
  if (u == NULL) {
    return HERALD_ERR_NOMEM;
  }
  u->defer = defer;
  u->evfd = -1;
  rv = ring_init(&u->ring, &u->defer);
  if (rv != 0) {
    free(u);
    return rv;
  }
  if (u->defer) {
    u->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (u->evfd < 0 || io_uring_register_eventfd(&u->ring, u->evfd) != 0) {
      if (u->evfd >= 0) {
        close(u->evfd);
      }
      io_uring_queue_exit(&u->ring);
      free(u);
      return HERALD_ERR_NOMEM;
    }
  }
  size_t rsz = URING_RING * sizeof(struct io_uring_buf);
  void *brmem = NULL;
  if (posix_memalign(&brmem, 4096, rsz) != 0) {
    io_uring_queue_exit(&u->ring);
    if (u->evfd >= 0) {
      close(u->evfd);
    }
    free(u);
    return HERALD_ERR_NOMEM;
  }
  memset(brmem, 0, rsz);
  u->br = brmem;
  /* Incremental consumption first (the flags field is liburing 2.3's
   * "pad"); an older kernel refuses the flag. */
  struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)brmem,
                                 .ring_entries = URING_RING_INC,
                                 .bgid = URING_BGID,
                                 .pad = IOU_PBUF_RING_INC};
  rv = io_uring_register_buf_ring(&u->ring, &reg, 0);
  u->inc = rv == 0;
  u->entries = URING_RING_INC;
  u->large = URING_BUF_LARGE;
  if (rv != 0) {
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uintptr_t)brmem;
    reg.ring_entries = URING_RING;
    reg.bgid = URING_BGID;
    u->entries = URING_RING;
    u->large = URING_BUF_SMALL;
    rv = io_uring_register_buf_ring(&u->ring, &reg, 0);
  }
  io_uring_buf_ring_init(u->br);
  if (rv == 0 && pool_grow(u, URING_POOL_START, URING_BUF_FIRST) == 0) {
    rv = HERALD_ERR_NOMEM;
  }
  if (rv != 0) {
    for (unsigned i = 0; i < u->nbufs; i++) {
      free(u->buf[i]);
    }
    free(brmem);
    io_uring_queue_exit(&u->ring);
    if (u->evfd >= 0) {
      close(u->evfd);
    }
    free(u);
    return rv;
  }
  loop->ur = u;
  return 0;
}

void herald__uring_settle(herald_loop *loop) {
  for (int i = 0; i < 100 && loop->ur->held; i++) {
    herald__uring_run(loop, 10);
  }
}

/* Every connection has ended by now; those held wait for the completions
 * of their cancels, which the first submit sends. */
void herald__uring_del(herald_loop *loop) {
  struct loop_uring *u = loop->ur;
  if (u == NULL) {
    return;
  }
  herald__uring_settle(loop);
  /* The ring goes first: a connection still held may have a receive in
   * flight into its message buffer. */
  io_uring_queue_exit(&u->ring);
  while (u->held) { /* should not happen: free them anyway */
    herald_ws *ws = u->held;
    ws->io.armed = 0;
    release_held(loop, ws);
  }
  if (u->evfd >= 0) {
    close(u->evfd);
  }
  free(u->br);
  for (unsigned i = 0; i < u->nbufs; i++) {
    free(u->buf[i]);
  }
  while (u->spare != NULL) {
    send_chunk *c = u->spare;
    u->spare = c->next;
    free(c);
  }
  free(u);
  loop->ur = NULL;
}
