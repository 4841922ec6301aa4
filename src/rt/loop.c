/*
 * loop.c - one event loop: libuv runs it, and our sockets live in an epoll
 * set of their own that libuv watches through a single uv_poll_t.
 *
 * Why not a uv_tcp_t per connection: libuv's stream reads allocate through a
 * callback per read and write through a request per write, and the handle is
 * 248 bytes. Driving our own non-blocking sockets lets one readable socket
 * cost exactly one read() and one writev() per loop pass, with a read buffer
 * shared by every connection of the loop, and keeps an idle connection
 * small. libuv still runs the loop, the timers, signals, DNS and threads.
 *
 * Order of work in one pass:
 *   poll phase   epoll_wait(0) on our set: readable sockets are read and
 *                their events delivered; each connection is flushed right
 *                after its own events (one writev)
 *   prepare      (just before the loop sleeps) connections made dirty by
 *                other paths (timers, posts, sends to other connections)
 *                are flushed, each with one writev
 *   timer        every WHEEL_TICK_MS the wheel slot that is due is scanned
 *
 * This file calls no other file of the runtime but the allocator's idle
 * release (bigmem.c, on each tick): the connections it runs are reached
 * through loop->conn_ops (set by ws.c), a server's listeners through
 * loop->on_listener and on_tick (set by server.c).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "rt/bigmem.h"
#include "rt/internal.h"

/* What HERALD_IO_AUTO picks when the kernel runs io_uring: 1 io_uring, 0
 * epoll (io_uring only when asked for by name). 0 for now: io_uring is not
 * as cheap as epoll on every shape (with large frames received in place,
 * 0.61-1.01 times epoll's CPU per message on the large shapes, but one
 * connection of 32-byte messages 1.09-1.13, 2026-12-07; docs/performance.md,
 * "io_uring beside epoll"), so it is opt-in. */
#define HERALD_IO_AUTO_RESOLVES_URING 0

void herald__loop_ref(herald_loop *loop, int delta) {
  size_t before = loop->nconns;
  loop->nconns = (size_t)((long)loop->nconns + delta);
  /* The tick timer is always active: ref'd, it keeps the loop alive and
   * gives uv_backend_timeout() a deadline, in both modes. */
  if (before == 0 && loop->nconns > 0) {
    uv_ref((uv_handle_t *)&loop->tick);
  } else if (before > 0 && loop->nconns == 0) {
    uv_unref((uv_handle_t *)&loop->tick);
  }
}

int herald__epoll_add(herald_loop *loop, io_item *io, uint32_t events) {
  if (loop->ur) {
    return herald__uring_watch(loop, io, events);
  }
  struct epoll_event ev = {.events = events, .data.ptr = io};
  return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) == 0 ? 0 : -errno;
}

int herald__epoll_mod(herald_loop *loop, io_item *io, uint32_t events) {
  if (loop->ur) {
    return herald__uring_watch(loop, io, events);
  }
  struct epoll_event ev = {.events = events, .data.ptr = io};
  return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0 ? 0 : -errno;
}

void herald__epoll_del(herald_loop *loop, io_item *io) {
  if (loop->ur) {
    herald__uring_unwatch(loop, io);
    return;
  }
  struct epoll_event ev = {0};
  (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, &ev);
}

/* ---- timer wheel -------------------------------------------------------- */

/* Ticks fall on multiples of WHEEL_TICK_MS. A deadline goes into the slot of
 * the first tick at or after it, so the tick that visits a slot finds every
 * deadline of this turn already due. */
static size_t slot_of(uint64_t t) {
  return (size_t)(((t + WHEEL_TICK_MS - 1) / WHEEL_TICK_MS) % WHEEL_SLOTS);
}

void herald__wheel_remove(herald_ws *ws) {
  if (!(ws->flags & WS_IN_WHEEL)) {
    return;
  }
  herald_loop *loop = ws->loop;
  if (ws->wheel_prev) {
    ws->wheel_prev->wheel_next = ws->wheel_next;
  } else {
    loop->wheel[slot_of(ws->deadline)] = ws->wheel_next;
  }
  if (ws->wheel_next) {
    ws->wheel_next->wheel_prev = ws->wheel_prev;
  }
  ws->wheel_prev = ws->wheel_next = NULL;
  ws->flags &= (uint16_t)~WS_IN_WHEEL;
}

/* Deadlines further than one turn of the wheel sit in their slot and are put
 * back when their slot comes round early. */
void herald__wheel_set(herald_ws *ws, uint64_t deadline) {
  herald__wheel_remove(ws);
  ws->deadline = deadline;
  if (deadline == 0) {
    return;
  }
  herald_loop *loop = ws->loop;
  if (deadline <= loop->wheel_now) {
    deadline = loop->wheel_now + WHEEL_TICK_MS; /* next tick */
    ws->deadline = deadline;
  }
  size_t s = slot_of(deadline);
  ws->wheel_prev = NULL;
  ws->wheel_next = loop->wheel[s];
  if (ws->wheel_next) {
    ws->wheel_next->wheel_prev = ws;
  }
  loop->wheel[s] = ws;
  ws->flags |= WS_IN_WHEEL;
}

static void on_tick(uv_timer_t *t) {
  herald_loop *loop = t->data;
  uint64_t now = herald__now(loop);
  while (loop->wheel_now + WHEEL_TICK_MS <= now) {
    loop->wheel_now += WHEEL_TICK_MS;
    size_t s = slot_of(loop->wheel_now);
    /* Detach the slot: handlers may re-arm into any slot, this one too. */
    herald_ws *ws = loop->wheel[s];
    loop->wheel[s] = NULL;
    while (ws) {
      herald_ws *next = ws->wheel_next;
      ws->flags &= (uint16_t)~WS_IN_WHEEL;
      ws->wheel_prev = ws->wheel_next = NULL;
      if (ws->deadline <= loop->wheel_now) {
        ws->deadline = 0;
        loop->conn_ops->timer(ws, now);
      } else {
        herald__wheel_set(ws, ws->deadline);
      }
      ws = next;
    }
  }
  /* Medium and large blocks this thread kept and no longer uses go back
   * to libc (bigmem.c): a loop that carried large messages once does not
   * hold their buffers for good. */
  (void)herald__big_idle();
  if (loop->on_tick) {
    loop->on_tick(loop);
  }
}

/* ---- dirty and resume lists --------------------------------------------- */

void herald__mark_dirty(herald_ws *ws) {
  ws->flags |= WS_NEEDS_FLUSH;
  if (!(ws->flags & WS_DIRTY)) {
    ws->flags |= WS_DIRTY;
    ws->dirty_next = ws->loop->dirty;
    ws->loop->dirty = ws;
  }
}

/* Frees connections that finished during this pass. They are unlinked from
 * every list by then; freeing waits for a safe point because their last
 * callback may have been deep in the stack. */
static void reap(herald_loop *loop) {
  while (loop->reap) {
    herald_ws *ws = loop->reap;
    loop->reap = ws->next;
    if (loop->ur && herald__uring_hold(loop, ws)) {
      continue; /* io_uring requests in flight: their end frees it */
    }
    loop->conn_ops->free(ws);
  }
}

static void on_spin(uv_idle_t *h) {
  (void)h; /* the prepare phase that follows does the work */
}

static void flush_list(herald_loop *loop) {
  while (loop->dirty) {
    herald_ws *ws = loop->dirty;
    loop->dirty = ws->dirty_next;
    ws->flags &= (uint16_t)~WS_DIRTY;
    /* Skip connections already flushed after their own read. */
    if ((ws->flags & (WS_DEAD | WS_NEEDS_FLUSH)) == WS_NEEDS_FLUSH) {
      loop->conn_ops->flush(ws);
    }
  }
}

/* Writes what this pass queued, then continues the connections whose
 * reading was resumed (an HTTP answer given later, herald_ws_resume_read),
 * then writes what they queued. The output goes first so that a connection
 * paused because its input made a lot of output (a publisher fanning out)
 * continues only once that output reached the sockets. Resumes asked for
 * while resuming wait for the next pass, and the idle handle keeps the loop
 * from sleeping until then. */
static void flush_dirty(herald_loop *loop) {
  flush_list(loop);
  herald_ws *list = loop->resume;
  loop->resume = NULL;
  while (list) {
    herald_ws *ws = list;
    list = ws->cold->resume_next;
    ws->flags &= (uint16_t)~WS_RESUME;
    if (!(ws->flags & WS_DEAD)) {
      loop->conn_ops->resume(ws);
    }
  }
  flush_list(loop);
  if (loop->resume) {
    uv_idle_start(&loop->spin, on_spin);
  } else {
    uv_idle_stop(&loop->spin);
  }
}

/* The end of a pass: the owner's pass hook, then the output. */
static void end_pass(herald_loop *loop) {
  if (loop->pass_fn) {
    loop->pass_fn(loop, loop->pass_ud);
  }
  flush_dirty(loop);
  reap(loop);
}

static void on_prepare(uv_prepare_t *p) {
  herald_loop *loop = p->data;
  if (!loop->driving) { /* the driver ends its passes itself */
    end_pass(loop);
    if (loop->ur) {
      herald__uring_submit(loop);
    }
  }
}

/* ---- the epoll set ------------------------------------------------------ */

#define MAX_EVENTS 256

/* Delivers what epoll_wait reported. Returns 1 if libuv's backend fd was
 * among it (only while driving). No reaping here: a finished connection may
 * still be on the dirty or resume list, which end_pass walks, then reaps. */
static int dispatch(herald_loop *loop, const struct epoll_event *evs, int n) {
  int uv_ready = 0;
  for (int i = 0; i < n; i++) {
    io_item *io = evs[i].data.ptr;
    if (io->kind == IO_WS) {
      herald_ws *ws = (herald_ws *)io;
      if (!(ws->flags & WS_DEAD)) {
        loop->conn_ops->ready(ws, evs[i].events);
      }
    } else if (io->kind == IO_LISTENER) {
      loop->on_listener(loop, io);
    } else if (io->kind == IO_POST) {
      herald__loop_post_ready(loop);
    } else {
      uv_ready = 1;
    }
  }
  return uv_ready;
}

static void run_posts(herald_loop *loop);

/* Nested mode: libuv sleeps in its own epoll set and reports ours as one
 * readable fd. */
static void on_epoll(uv_poll_t *p, int status, int events) {
  herald_loop *loop = p->data;
  (void)status;
  (void)events;
  if (loop->ur) {
    (void)herald__uring_run(loop, 0);
  } else {
    struct epoll_event evs[MAX_EVENTS];
    int n = herald__sys_epoll_wait(loop->epfd, evs, MAX_EVENTS, 0);
    dispatch(loop, evs, n > 0 ? n : 0);
  }
  run_posts(loop);
}

/* Driven mode, for herald_loop_run() on a loop of our own. Nested, every
 * pass costs two epoll_wait calls (libuv's, then ours); here the thread
 * sleeps in our set, which holds libuv's backend fd, so a pass costs one,
 * plus one from libuv on the passes where it has something to do: one of
 * its fds is ready (signals, DNS and thread-pool completions,
 * the application's handles), a timer is due, or it has idle or pending
 * work (uv_backend_timeout() says 0). Between those passes libuv is not
 * entered at all, so an application's prepare and check handles run only
 * on them; per-pass work belongs in herald_loop_on_pass(). */
static int drive(herald_loop *loop) {
  uv_loop_t *uv = loop->uv;
  loop->uv_io.kind = IO_UV;
  loop->uv_io.fd = uv_backend_fd(uv);
  uv_poll_stop(&loop->epoll_watch);
  if (loop->uv_io.fd < 0 ||
      herald__epoll_add(loop, &loop->uv_io, EPOLLIN) != 0) {
    uv_poll_start(&loop->epoll_watch, UV_READABLE, on_epoll);
    return uv_run(uv, UV_RUN_DEFAULT);
  }
  loop->driving = 1;
  loop->stop_now = 0;
  int alive = uv_run(uv, UV_RUN_NOWAIT);
  struct epoll_event evs[MAX_EVENTS];
  while (!loop->stop_now) {
    end_pass(loop);
    if (uv->stop_flag) { /* uv_stop() from one of our callbacks */
      uv->stop_flag = 0;
      break;
    }
    alive = alive || uv_loop_alive(uv);
    if (!alive) {
      break;
    }
    int timeout = uv_backend_timeout(uv);
    /* From here a post must wake us (see "posts"); one made since the
     * last run_posts means no sleep at all. */
    atomic_store(&loop->asleep, 1);
    if (atomic_load(&loop->post_pending)) {
      timeout = 0;
    }
    uint64_t due = timeout >= 0 ? uv_now(uv) + (uint64_t)timeout : UINT64_MAX;
    int uv_ready;
    if (loop->ur) {
      uv_ready = herald__uring_run(loop, timeout); /* updates the time */
      atomic_store(&loop->asleep, 0);
    } else {
      int n = herald__sys_epoll_wait(loop->epfd, evs, MAX_EVENTS, timeout);
      atomic_store(&loop->asleep, 0);
      uv_update_time(uv);
      uv_ready = dispatch(loop, evs, n > 0 ? n : 0);
    }
    if (uv_ready || uv_now(uv) >= due) {
      alive = uv_run(uv, UV_RUN_NOWAIT);
    } else {
      alive = 0; /* ask uv_loop_alive() at the top */
    }
    run_posts(loop);
  }
  end_pass(loop);
  herald__epoll_del(loop, &loop->uv_io);
  if (loop->ur) {
    herald__uring_settle(loop);
  }
  loop->driving = 0;
  atomic_store(&loop->asleep, 1);
  uv_poll_start(&loop->epoll_watch, UV_READABLE, on_epoll);
  return uv_loop_alive(uv);
}

/* ---- posts -------------------------------------------------------------- */

/*
 * Another thread hands the loop work through its post list (under post_mu)
 * and wakes it through an eventfd of its own in the loop's epoll set (or
 * polled by its ring), not a uv_async_t: a wake-up then costs the loop one
 * readable fd in the pass it sleeps in, not a libuv pass of its own (and
 * libuv's async handle spins while the sender is still inside its write).
 *
 * A loop that is running a pass runs the posts at the end of it anyway, so
 * the sender writes the eventfd only while the loop may be asleep: a
 * driven loop clears `asleep` for the length of each pass and sets it again
 * before it checks post_pending and sleeps. The sender sets post_pending,
 * then reads asleep; the loop sets asleep, then reads post_pending: with
 * both sequentially consistent, at least one of them sees the other, so a
 * post never waits for an unrelated wake-up. A loop that libuv runs (not
 * driven) keeps asleep set: every post writes, and `signalled` makes that
 * one write per pass at most.
 */

void herald__loop_post_ready(herald_loop *loop) {
  uint64_t count;
  /* One read empties the counter; EAGAIN: a spurious readiness. */
  (void)!herald__sys_read(loop->post_io.fd, &count, sizeof(count));
  atomic_store(&loop->signalled, 0);
}

static void wake(herald_loop *loop, int always) {
  if ((always || atomic_load(&loop->asleep)) &&
      !atomic_exchange(&loop->signalled, 1)) {
    uint64_t one = 1;
    /* Fails only when the counter would overflow: readable already. */
    (void)!herald__sys_write(loop->post_io.fd, &one, sizeof(one));
  }
}

/* Items are not freed by the loop that ran them but kept for the posting
 * threads to reuse (memory freed by a thread other than the one that
 * allocated it is malloc's dear case): the items run are handed to the
 * spare list the next time the loop takes post_mu, which posters take
 * anyway. At most POST_SPARE_MAX are kept; the rest are freed. */
#define POST_SPARE_MAX 64

/* Under post_mu: the items of the last run_posts to the spare list. */
static void spare_ran(herald_loop *loop) {
  while (loop->ran) {
    post_item *p = loop->ran;
    loop->ran = p->next;
    if (loop->nspare < POST_SPARE_MAX) {
      p->next = loop->spare;
      loop->spare = p;
      loop->nspare++;
    } else {
      free(p);
    }
  }
}

/* The posts made so far, in order, and a stop asked for; on the loop's
 * thread, after the events of its pass. */
static void run_posts(herald_loop *loop) {
  if (!atomic_load(&loop->post_pending)) {
    return;
  }
  pthread_mutex_lock(&loop->post_mu);
  post_item *p = loop->posts;
  loop->posts = loop->posts_tail = NULL;
  int stop = loop->stopping;
  atomic_store(&loop->post_pending, 0);
  spare_ran(loop);
  pthread_mutex_unlock(&loop->post_mu);
  while (p) {
    post_item *next = p->next;
    p->fn(p->arg);
    p->next = loop->ran;
    loop->ran = p;
    p = next;
  }
  if (stop) {
    herald__loop_stop_now(loop);
  }
}

HERALD_API int herald_loop_post(herald_loop *loop, void (*fn)(void *arg),
                                void *arg) {
  pthread_mutex_lock(&loop->post_mu);
  post_item *p = loop->spare;
  if (p != NULL) {
    loop->spare = p->next;
    loop->nspare--;
  } else {
    pthread_mutex_unlock(&loop->post_mu);
    p = malloc(sizeof(*p));
    if (p == NULL) {
      return HERALD_ERR_NOMEM;
    }
    pthread_mutex_lock(&loop->post_mu);
  }
  p->fn = fn;
  p->arg = arg;
  p->next = NULL;
  if (loop->posts_tail) {
    loop->posts_tail->next = p;
  } else {
    loop->posts = p;
  }
  loop->posts_tail = p;
  atomic_store(&loop->post_pending, 1);
  pthread_mutex_unlock(&loop->post_mu);
  wake(loop, 0);
  return 0;
}

HERALD_API void herald_loop_stop(herald_loop *loop) {
  pthread_mutex_lock(&loop->post_mu);
  loop->stopping = 1;
  atomic_store(&loop->post_pending, 1);
  pthread_mutex_unlock(&loop->post_mu);
  wake(loop, 0);
}

/* ---- the backend -------------------------------------------------------- */

/* The process default, for loops made with HERALD_IO_DEFAULT: set by
 * herald_io_backend_set_default(), else read once from HERALD_IO_BACKEND. */
static _Atomic int default_backend = -1;

HERALD_API int herald_io_backend_parse(const char *name,
                                       herald_io_backend *out) {
  if (strcmp(name, "epoll") == 0) {
    *out = HERALD_IO_EPOLL;
  } else if (strcmp(name, "io_uring") == 0 || strcmp(name, "uring") == 0) {
    *out = HERALD_IO_URING;
  } else if (strcmp(name, "auto") == 0) {
    *out = HERALD_IO_AUTO;
  } else {
    return HERALD_ERR_INVALID_ARG;
  }
  return 0;
}

HERALD_API const char *herald_io_backend_name(herald_io_backend b) {
  switch (b) {
  case HERALD_IO_EPOLL:
    return "epoll";
  case HERALD_IO_URING:
    return "io_uring";
  case HERALD_IO_AUTO:
    return "auto";
  default:
    return "default";
  }
}

HERALD_API void herald_io_backend_set_default(herald_io_backend b) {
  default_backend = b == HERALD_IO_DEFAULT ? HERALD_IO_AUTO : (int)b;
}

static herald_io_backend default_of_process(void) {
  int b = default_backend;
  if (b < 0) {
    herald_io_backend parsed = HERALD_IO_AUTO;
    const char *env = getenv("HERALD_IO_BACKEND");
    if (env && *env && herald_io_backend_parse(env, &parsed) != 0) {
      parsed = HERALD_IO_AUTO;
    }
    b = (int)parsed;
    default_backend = b;
  }
  return (herald_io_backend)b;
}

HERALD_API herald_io_backend herald_io_backend_resolve(herald_io_backend b) {
  if (b == HERALD_IO_DEFAULT) {
    b = default_of_process();
  }
  if (b == HERALD_IO_AUTO) {
    b = HERALD_IO_AUTO_RESOLVES_URING && herald__uring_available() == 0
            ? HERALD_IO_URING
            : HERALD_IO_EPOLL;
  }
  return b;
}

HERALD_API herald_io_backend herald_loop_backend(const herald_loop *loop) {
  return loop->ur ? HERALD_IO_URING : HERALD_IO_EPOLL;
}

/* ---- lifecycle ---------------------------------------------------------- */

HERALD_API int herald_loop_new(herald_loop **ploop, void *uv_loop) {
  return herald_loop_new_backend(ploop, uv_loop, HERALD_IO_DEFAULT);
}

HERALD_API int herald_loop_new_backend(herald_loop **ploop, void *uv_loop,
                                       herald_io_backend backend) {
  backend = herald_io_backend_resolve(backend);
  if (backend != HERALD_IO_EPOLL && backend != HERALD_IO_URING) {
    return HERALD_ERR_INVALID_ARG;
  }
  herald_loop *loop = calloc(1, sizeof(*loop));
  if (loop == NULL) {
    return HERALD_ERR_NOMEM;
  }
  int rv = 0;
  loop->rbuf = malloc(READ_BUFFER_SIZE);
  if (loop->rbuf == NULL) {
    free(loop);
    return HERALD_ERR_NOMEM;
  }
  loop->rin = loop->rbuf;
  loop->rin_len = READ_BUFFER_SIZE;
  if (backend == HERALD_IO_URING &&
      (rv = herald__uring_new(loop, uv_loop == NULL)) != 0) {
    free(loop->rbuf);
    free(loop);
    return rv;
  }
  if (uv_loop) {
    loop->uv = uv_loop;
  } else {
    rv = uv_loop_init(&loop->uv_own);
    if (rv != 0) {
      herald__uring_del(loop);
      free(loop->rbuf);
      free(loop);
      return rv;
    }
    loop->uv = &loop->uv_own;
    loop->own_uv = 1;
  }
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  loop->post_io.kind = IO_POST;
  loop->post_io.fd = -1;
  if (loop->epfd >= 0) {
    loop->post_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  }
  if (loop->post_io.fd < 0 ||
      (rv = herald__epoll_add(loop, &loop->post_io, EPOLLIN)) != 0) {
    rv = rv ? rv : -errno;
    if (loop->post_io.fd >= 0) {
      close(loop->post_io.fd);
    }
    if (loop->epfd >= 0) {
      close(loop->epfd);
    }
    if (loop->own_uv) {
      uv_loop_close(loop->uv);
    }
    herald__uring_del(loop);
    free(loop->rbuf);
    free(loop);
    return rv;
  }
  pthread_mutex_init(&loop->post_mu, NULL);
  /* Attached, libuv watches our epoll set, or the ring (readable when
   * completions wait). */
  uv_poll_init(loop->uv, &loop->epoll_watch,
               loop->ur ? herald__uring_fd(loop) : loop->epfd);
  loop->epoll_watch.data = loop;
  uv_poll_start(&loop->epoll_watch, UV_READABLE, on_epoll);
  uv_prepare_init(loop->uv, &loop->prepare);
  loop->prepare.data = loop;
  uv_prepare_start(&loop->prepare, on_prepare);
  uv_idle_init(loop->uv, &loop->spin);
  loop->spin.data = loop;
  uv_timer_init(loop->uv, &loop->tick);
  loop->tick.data = loop;
  uv_timer_start(&loop->tick, on_tick, WHEEL_TICK_MS, WHEEL_TICK_MS);
  atomic_init(&loop->post_pending, 0);
  atomic_init(&loop->asleep, 1);
  atomic_init(&loop->signalled, 0);
  loop->wheel_now = herald__now(loop) - herald__now(loop) % WHEEL_TICK_MS;
  loop->handles_open = 4;
  /* Our own handles never keep herald_loop_run() going by themselves: a
   * loop runs while it has connections (herald__loop_ref) or while its
   * owner keeps a handle of its own (a server's workers do). */
  uv_unref((uv_handle_t *)&loop->epoll_watch);
  uv_unref((uv_handle_t *)&loop->prepare);
  uv_unref((uv_handle_t *)&loop->spin);
  uv_unref((uv_handle_t *)&loop->tick);
  *ploop = loop;
  return 0;
}

HERALD_API int herald_loop_run(herald_loop *loop) {
  if (loop->own_uv && !loop->driving) {
    return drive(loop);
  }
  return uv_run(loop->uv, UV_RUN_DEFAULT);
}

void herald__loop_stop_now(herald_loop *loop) {
  loop->stop_now = 1;
  uv_stop(loop->uv);
}

HERALD_API void herald_loop_on_pass(herald_loop *loop,
                                    void (*fn)(herald_loop *loop, void *ud),
                                    void *ud) {
  loop->pass_fn = fn;
  loop->pass_ud = ud;
}

HERALD_API void *herald_loop_uv(herald_loop *loop) {
  return loop->uv;
}

static void on_handle_closed(uv_handle_t *h) {
  herald_loop *loop = h->data;
  loop->handles_open--;
}

static void close_leftover(uv_handle_t *h, void *arg) {
  herald_loop *loop = arg;
  if (uv_is_closing(h) || h == (uv_handle_t *)&loop->epoll_watch ||
      h == (uv_handle_t *)&loop->prepare || h == (uv_handle_t *)&loop->spin ||
      h == (uv_handle_t *)&loop->tick) {
    return;
  }
  uv_close(h, NULL);
}

HERALD_API void herald_loop_del(herald_loop *loop) {
  if (loop == NULL) {
    return;
  }
  flush_dirty(loop);
  reap(loop);
  /* Handles the application left open on a loop it asked us to delete are
   * closed too, or the loop could never be closed. */
  uv_walk(loop->uv, close_leftover, loop);
  uv_close((uv_handle_t *)&loop->epoll_watch, on_handle_closed);
  uv_close((uv_handle_t *)&loop->prepare, on_handle_closed);
  uv_close((uv_handle_t *)&loop->spin, on_handle_closed);
  uv_close((uv_handle_t *)&loop->tick, on_handle_closed);
  while (loop->handles_open > 0) {
    uv_run(loop->uv, UV_RUN_NOWAIT);
  }
  post_item *lists[3] = {loop->posts, loop->spare, loop->ran};
  for (int i = 0; i < 3; i++) {
    for (post_item *p = lists[i], *next; p; p = next) {
      next = p->next;
      free(p);
    }
  }
  herald__uring_del(loop);
  close(loop->post_io.fd);
  close(loop->epfd);
  if (loop->own_uv) {
    uv_loop_close(loop->uv);
  }
  pthread_mutex_destroy(&loop->post_mu);
  free(loop->rbuf);
  free(loop);
}

HERALD_API const char *herald_rt_strerror(int err) {
  if (err <= -1100 && err >= -1599) {
    return herald_strerror(err);
  }
  return uv_strerror(err);
}

HERALD_API void herald_rt_limits_init(herald_rt_limits *l) {
  memset(l, 0, sizeof(*l));
  l->handshake_timeout_ms = 10000;
  l->idle_timeout_ms = 0;
  l->ping_interval_ms = 0;
  l->pong_timeout_ms = 10000;
  l->close_timeout_ms = 3000;
  l->send_high_water = 1u << 20;
  l->send_low_water = 256u << 10;
  l->send_hard_cap = 16u << 20;
  l->slow_policy = HERALD_SLOW_CLOSE;
  l->max_pings_per_sec = 100;
  l->max_http_body = 1u << 20;
}
