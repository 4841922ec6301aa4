/* post_test.c - herald_loop_post() and herald_loop_stop() from another
 * thread, on a driven and on an attached loop (and, as post_test_uring, on
 * the io_uring backend): order, exactly once, and no lost wake-up. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "herald/rt.h"
#include "test.h"

/* Posts from another thread: every one runs once, in order, whether the
 * loop sleeps or is busy when it comes, and herald_loop_stop() from a post
 * ends the run. Then round trips, each post made while the loop is in the
 * pass hook of the pass that ran the previous one (the hook waits for it),
 * that is after that pass took its posts and before it sleeps: a lost
 * wake-up would leave it waiting for the loop's next timer tick (100 ms).
 * Driven and attached. */
#define POSTS 20000
#define ROUND_TRIPS 300
typedef struct post_run {
  herald_loop *loop;
  int seq[POSTS];
  int ran, out_of_order, timed_out, stopped;
  _Atomic int pongs, sent;
  int pong_pass; /* the pass hook has a pong to wait after */
  int slow;      /* round trips over 50 ms */
  uv_timer_t watchdog;
} post_run;

static post_run *posts_now; /* the run under way */

static void post_one(void *arg) {
  const int *seq = arg;
  post_run *p = posts_now;
  if (*seq != p->ran) {
    p->out_of_order++;
  }
  p->ran++;
}

static void post_pong(void *arg) {
  post_run *p = arg;
  atomic_fetch_add(&p->pongs, 1);
  p->pong_pass = 1;
}

static int64_t mono_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void post_pass(herald_loop *loop, void *ud) {
  (void)loop;
  post_run *p = ud;
  if (p->pong_pass) {
    p->pong_pass = 0;
    int64_t t0 = mono_ms();
    while (atomic_load(&p->sent) < ROUND_TRIPS &&
           atomic_load(&p->sent) <= atomic_load(&p->pongs) &&
           mono_ms() - t0 < 20) {
    }
  }
}

static void post_stop(void *arg) {
  post_run *p = arg;
  p->stopped = 1;
  herald_loop_stop(p->loop);
}

static void post_watchdog(uv_timer_t *t) {
  post_run *p = t->data;
  p->timed_out = 1;
  herald_loop_stop(p->loop);
}

static void *post_sender(void *arg) {
  post_run *p = arg;
  unsigned r = 12345;
  for (int i = 0; i < POSTS; i++) {
    CHECK_EQ(herald_loop_post(p->loop, post_one, &p->seq[i]), 0);
    r = r * 1103515245u + 12345u;
    if ((r >> 16) % 32 == 0) { /* now and then long enough to sleep */
      struct timespec pause = {0, (long)((r >> 8) % 300) * 1000};
      nanosleep(&pause, NULL);
    }
  }
  for (int i = 0; i < ROUND_TRIPS && !p->timed_out; i++) {
    int64_t t0 = mono_ms();
    CHECK_EQ(herald_loop_post(p->loop, post_pong, p), 0);
    atomic_store(&p->sent, i + 1);
    while (atomic_load(&p->pongs) <= i && mono_ms() - t0 < 5000) {
      struct timespec pause = {0, 20000};
      nanosleep(&pause, NULL);
    }
    if (mono_ms() - t0 > 50) {
      p->slow++;
    }
  }
  CHECK_EQ(herald_loop_post(p->loop, post_stop, p), 0);
  return NULL;
}

static void run_posts_mode(int attached) {
  post_run *p = calloc(1, sizeof(*p));
  CHECK(p != NULL);
  posts_now = p;
  for (int i = 0; i < POSTS; i++) {
    p->seq[i] = i;
  }
  uv_loop_t uv;
  if (attached) {
    CHECK_EQ(uv_loop_init(&uv), 0);
  }
  CHECK_EQ(herald_loop_new(&p->loop, attached ? &uv : NULL), 0);
  herald_loop_on_pass(p->loop, post_pass, p);
  uv_timer_init(herald_loop_uv(p->loop), &p->watchdog);
  p->watchdog.data = p;
  uv_timer_start(&p->watchdog, post_watchdog, 20000, 0); /* keeps it alive */
  pthread_t t;
  CHECK_EQ(pthread_create(&t, NULL, post_sender, p), 0);
  if (attached) {
    uv_run(&uv, UV_RUN_DEFAULT);
  } else {
    herald_loop_run(p->loop);
  }
  pthread_join(t, NULL);
  CHECK(!p->timed_out);
  CHECK(p->stopped);
  CHECK_EQ(p->ran, POSTS);
  CHECK_EQ(p->out_of_order, 0);
  CHECK_EQ(atomic_load(&p->pongs), ROUND_TRIPS);
  /* A busy machine may stall a few; lost wake-ups stall many. */
  CHECK(p->slow <= 5);
  uv_close((uv_handle_t *)&p->watchdog, NULL);
  herald_loop_del(p->loop);
  if (attached) {
    CHECK_EQ(uv_loop_close(&uv), 0);
  }
  free(p);
}

static void test_posts_across_threads(void) {
  run_posts_mode(0);
  run_posts_mode(1);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  RUN(test_posts_across_threads);
  return TEST_REPORT();
}
