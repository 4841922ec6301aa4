/* bench.c - `herald bench`: a WebSocket load generator on the runtime's
 * client. One herald_loop on one thread drives every connection.
 *
 * Modes:
 *   echo     each connection keeps --inflight messages outstanding; every
 *            echo that comes back is timed and answered with the next
 *            message from inside on_message, so the loop's one writev per
 *            connection and pass carries them. With --rate N the load is
 *            open-loop instead: N messages a second in all, spread over
 *            the connections in turn whatever comes back, and each
 *            latency is counted from the moment the message was due, so
 *            it includes the time it queued (in the bench or the server).
 *   connect  --connections connection attempts are kept going at once; each
 *            one that opens is closed again (close handshake) and replaced.
 *   idle     --connections connections are opened and held, silent.
 *
 * Phases: setup (opening, paced so that at most --connect-inflight connects
 * are outstanding), warm-up (not measured), the measured window, then drain
 * (close every connection and wait for the close handshakes, bounded).
 *
 * Latency is kept in a fixed log-linear histogram: exact below 256 ns, then
 * 128 linear steps per power of two (0.8 % resolution) up to 60 s. Recording
 * a sample is an index computation and an increment; nothing is allocated.
 *
 * An echo that differs from what was sent (length, bytes or opcode) makes
 * the run an error: a server that answers something else is not measured.
 * The report ends with which side was the limit (bench_proc.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "app/bench_proc.h"
#include "app/cli.h"
#include "app/hist.h"
#include "herald/rt.h"

#include "app/bench_int.h"

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- connections -------------------------------------------------------- */

static void start_conn(bench *b, bconn *c, size_t srcidx);
static void setup_progress(bench *b);
static void begin_drain(bench *b);

/* The ring of a connection's send times grows only in --rate mode, where
 * the number in flight is whatever the server has not answered yet; past
 * RING_MAX a message is not sent and counts as `behind`. */
#define RING_MAX (1u << 20)

static int ring_push(bench *b, bconn *c, uint64_t t) {
  if (c->count == c->cap) {
    if (b->rate <= 0 || c->cap >= RING_MAX) {
      return -1;
    }
    uint32_t ncap = c->cap ? c->cap * 2 : 64;
    uint64_t *n = malloc(ncap * sizeof(*n));
    if (n == NULL) {
      return -1;
    }
    for (uint32_t i = 0; i < c->count; i++) {
      n[i] = c->sent[(c->head + i) % c->cap];
    }
    free(c->sent);
    c->sent = n;
    c->head = 0;
    c->cap = ncap;
  }
  uint32_t tail = c->head + c->count;
  if (tail >= c->cap) {
    tail -= c->cap;
  }
  c->sent[tail] = t;
  c->count++;
  return 0;
}

/* Sends one message; t is when it was due (now, or the --rate schedule). */
static void conn_send(bconn *c, uint64_t t) {
  bench *b = c->b;
  if (c->count == c->cap && (b->rate <= 0 || c->cap >= RING_MAX)) {
    b->behind++;
    return;
  }
  int rv = herald_ws_send(c->ws, b->op, b->payload, b->size);
  if (rv < 0 || rv == HERALD_SEND_DROPPED) {
    b->send_errors++;
    return;
  }
  if (ring_push(b, c, t) != 0) {
    b->behind++; /* sent, but it cannot be timed */
    return;
  }
  if (b->phase == PH_MEASURE) {
    b->sent_window++;
  }
}

/* Says what came back instead of an echo, for the first few. */
static void bad_echo(bench *b, herald_opcode op, const uint8_t *data,
                     size_t len, const char *why) {
  b->bad_echo++;
  if (b->json || b->bad_echo > 3) {
    return;
  }
  size_t show = len > 80 ? 80 : len;
  int text = op == HERALD_OP_TEXT;
  for (size_t i = 0; text && i < show; i++) {
    text = data[i] >= 0x20 && data[i] < 0x7f;
  }
  fprintf(stderr,
          "herald bench: not an echo (%s): got %s %zu B%s%.*s%s, sent %s %zu "
          "B\n",
          why, op == HERALD_OP_TEXT ? "text" : "binary", len, text ? " \"" : "",
          text ? (int)show : 0, text ? (const char *)data : "",
          text ? (len > show ? "...\"" : "\"") : "",
          b->op == HERALD_OP_TEXT ? "text" : "binary", b->size);
}

static void on_open(herald_ws *ws, void *ud) {
  bconn *c = ud;
  bench *b = c->b;
  uint64_t t = now_ns();
  c->state = C_OPEN;
  b->connecting--;
  b->open++;
  b->opened++;
  switch (b->mode) {
  case MODE_ECHO:
    /* Traffic starts once every connection is set up (start_traffic), so
     * that a slow server is not flooded while it still accepts. */
    break;
  case MODE_CONNECT:
    if (b->phase == PH_MEASURE) {
      b->connects++;
      hist_record(&b->lat, t - c->started);
    }
    c->state = C_CLOSING;
    herald_ws_close(ws, HERALD_CLOSE_NORMAL, NULL, 0);
    break;
  case MODE_IDLE:
    break;
  }
  if (b->phase == PH_DRAIN && c->state == C_OPEN) {
    c->state = C_CLOSING;
    herald_ws_close(ws, HERALD_CLOSE_NORMAL, NULL, 0);
  }
  if (b->phase == PH_SETUP) {
    setup_progress(b);
  }
}

static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  (void)ws;
  bconn *c = ud;
  bench *b = c->b;
  if (b->mode != MODE_ECHO || c->count == 0) {
    bad_echo(b, op, data, len, "nothing was in flight");
    return;
  }
  uint64_t t = now_ns();
  uint64_t sent = c->sent[c->head];
  if (++c->head == c->cap) {
    c->head = 0;
  }
  c->count--;
  if (op != b->op || len != b->size || memcmp(data, b->payload, len) != 0) {
    bad_echo(b, op, data, len,
             op != b->op      ? "another opcode"
             : len != b->size ? "another length"
                              : "other bytes");
  } else if (b->phase == PH_MEASURE) {
    b->msgs++;
    b->bytes += len;
    hist_record(&b->lat, t > sent ? t - sent : 0);
  }
  if (b->rate <= 0 && b->phase != PH_DRAIN && c->state == C_OPEN) {
    conn_send(c, t);
  }
}

static void on_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  (void)ws;
  bconn *c = ud;
  bench *b = c->b;
  uint8_t was = c->state;
  c->state = C_DONE;
  c->ws = NULL;
  c->count = 0;
  c->head = 0;
  b->live--;
  if (was == C_CONNECTING) {
    b->connecting--;
    if (b->phase != PH_DRAIN) {
      b->failed++;
      if (!b->json && b->failed <= 5) {
        fprintf(stderr, "herald bench: connect failed: %s\n",
                info->error ? info->error : "closed");
      }
    }
  } else {
    b->open--;
    /* In connect mode we close every connection ourselves. */
    int expected = b->phase == PH_DRAIN || was == C_CLOSING;
    if (!expected) {
      b->lost++;
      if (!b->json && b->lost <= 5) {
        fprintf(stderr, "herald bench: connection closed: code %u%s%s\n",
                info->code, info->error ? ", " : "",
                info->error ? info->error : "");
      }
    }
  }
  if (b->phase == PH_DRAIN) {
    if (b->live == 0) {
      herald_loop_stop(b->loop);
    }
    return;
  }
  if (b->mode == MODE_CONNECT) {
    start_conn(b, c, (size_t)(b->src_rr++ % (b->nsources ? b->nsources : 1)));
    return;
  }
  if (b->phase == PH_SETUP) {
    setup_progress(b);
  }
}

static const herald_ws_callbacks conn_cb = {
    .on_open = on_open,
    .on_message = on_message,
    .on_close = on_close,
};

static void start_conn(bench *b, bconn *c, size_t srcidx) {
  b->ccfg.bind_address = b->nsources ? b->sources[srcidx] : NULL;
  c->b = b;
  c->state = C_CONNECTING;
  c->started = now_ns();
  c->count = 0;
  c->head = 0;
  b->connecting++;
  b->live++;
  int rv = herald_connect(b->loop, &b->ccfg, &conn_cb, c, &c->ws);
  if (rv != 0) {
    c->state = C_DONE;
    b->connecting--;
    b->live--;
    b->failed++;
    if (!b->json && b->failed <= 5) {
      fprintf(stderr, "herald bench: cannot connect: %s\n",
              herald_rt_strerror(rv));
    }
  }
}

/* ---- phases ------------------------------------------------------------- */

/* --rate: every millisecond, send the messages that fell due since the
 * last tick, each stamped with the moment it was due. A bench that falls
 * behind catches up in bursts of at most RATE_BURST, so its own lateness
 * shows in the latency rather than vanishing. */
#define RATE_BURST 65536

static void on_rate_tick(uv_timer_t *t) {
  bench *b = t->data;
  if (b->phase != PH_WARMUP && b->phase != PH_MEASURE) {
    return;
  }
  uint64_t now = now_ns();
  uint64_t due = (uint64_t)((double)(now - b->rate_start) * b->rate / 1e9);
  for (int burst = 0; b->scheduled < due && burst < RATE_BURST; burst++) {
    uint64_t at =
        b->rate_start + (uint64_t)((double)b->scheduled * 1e9 / b->rate);
    b->scheduled++;
    bconn *c = NULL;
    for (size_t k = 0; k < b->nconns && c == NULL; k++) {
      bconn *x = &b->conns[b->rate_rr];
      b->rate_rr = (b->rate_rr + 1) % b->nconns;
      if (x->state == C_OPEN) {
        c = x;
      }
    }
    if (c == NULL) {
      b->behind++; /* no connection left to send on */
      continue;
    }
    conn_send(c, at);
  }
}

static void start_traffic(bench *b) {
  uint64_t t = now_ns();
  if (b->rate > 0) {
    b->rate_start = t;
    b->scheduled = 0;
    uv_timer_start(&b->rate_timer, on_rate_tick, 1, 1);
    return;
  }
  for (size_t i = 0; i < b->nconns; i++) {
    bconn *c = &b->conns[i];
    if (c->state == C_OPEN) {
      for (uint32_t j = 0; j < b->inflight; j++) {
        conn_send(c, t);
      }
    }
  }
}

static void phase_timer_start(bench *b, uv_timer_cb cb, double seconds) {
  uint64_t ms = (uint64_t)(seconds * 1000.0 + 0.5);
  uv_timer_start(&b->phase_timer, cb, ms, 0);
}

/* The live line on a terminal (stderr), once a second: the phase and, while
 * measuring, the last second's rate and the latency so far. */
static void on_progress(uv_timer_t *t) {
  bench *b = t->data;
  uint64_t now = now_ns();
  char line[200];
  if (b->phase == PH_SETUP) {
    snprintf(line, sizeof(line), "setup: %zu of %zu connections open", b->open,
             b->nconns);
  } else if (b->phase == PH_WARMUP) {
    snprintf(line, sizeof(line), "warm-up: %zu connections open", b->open);
  } else if (b->phase == PH_MEASURE) {
    uint64_t count = b->mode == MODE_CONNECT ? b->connects : b->msgs;
    double dt = (double)(now - b->progress_t) / 1e9;
    double rate = dt > 0 ? (double)(count - b->progress_msgs) / dt : 0;
    b->progress_msgs = count;
    double el = (double)(now - b->t0) / 1e9;
    if (b->lat.total) {
      snprintf(line, sizeof(line),
               "%.0f/%.0f s: %.0f %s/s, p50 %.1f us, p99 %.1f us, "
               "errors %" PRIu64,
               el, b->duration, rate,
               b->mode == MODE_CONNECT ? "connects" : "msgs",
               hist_quantile_us(&b->lat, 0.5), hist_quantile_us(&b->lat, 0.99),
               b->failed + b->lost + b->bad_echo + b->send_errors);
    } else {
      snprintf(line, sizeof(line), "%.0f/%.0f s: %zu connections open", el,
               b->duration, b->open);
    }
  } else {
    snprintf(line, sizeof(line), "closing: %zu connections left", b->live);
  }
  b->progress_t = now;
  fprintf(stderr, "\r\033[K%s", line);
  fflush(stderr);
  b->progress_shown = 1;
}

static void progress_clear(bench *b) {
  if (b->progress_shown) {
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
    b->progress_shown = 0;
  }
}

static void on_measure_end(uv_timer_t *t) {
  bench *b = t->data;
  b->t1 = now_ns();
  b->cpu1 = bp_self_cpu();
  if (b->server_pid > 0) {
    bp_read(b->server_pid, &b->srv1);
    b->srv_ok = b->srv0.ok && b->srv1.ok;
  }
  begin_drain(b);
}

static void on_warmup_end(uv_timer_t *t) {
  bench *b = t->data;
  b->phase = PH_MEASURE;
  b->msgs = b->bytes = b->connects = b->sent_window = 0;
  memset(&b->lat, 0, sizeof(b->lat));
  if (b->server_pid > 0) {
    bp_read(b->server_pid, &b->srv0);
  }
  b->cpu0 = bp_self_cpu();
  b->t0 = b->progress_t = now_ns();
  b->progress_msgs = 0;
  phase_timer_start(b, on_measure_end, b->duration);
}

static void on_drain_timeout(uv_timer_t *t) {
  bench *b = t->data;
  herald_loop_stop(b->loop);
}

static void begin_drain(bench *b) {
  b->phase = PH_DRAIN;
  uv_timer_stop(&b->rate_timer);
  for (size_t i = 0; i < b->nconns; i++) {
    bconn *c = &b->conns[i];
    if (c->state == C_OPEN) {
      c->state = C_CLOSING;
      herald_ws_close(c->ws, HERALD_CLOSE_NORMAL, NULL, 0);
    }
  }
  if (b->live == 0) {
    herald_loop_stop(b->loop);
    return;
  }
  /* The close handshakes should take milliseconds; do not wait forever. */
  phase_timer_start(b, on_drain_timeout, b->mode == MODE_IDLE ? 10.0 : 3.0);
}

/* Setup: keep up to connect_inflight connects going until every connection
 * was started, then move on once none is outstanding. */
static void setup_progress(bench *b) {
  while (b->next_start < b->nconns && b->connecting < b->connect_inflight) {
    size_t i = b->next_start++;
    start_conn(b, &b->conns[i], b->nsources ? i % b->nsources : 0);
  }
  if (b->next_start < b->nconns || b->connecting > 0 || b->phase != PH_SETUP) {
    return;
  }
  b->setup_end = now_ns();
  if (b->mode == MODE_IDLE) {
    /* Scripts wait for this line before they measure the server. */
    fprintf(stderr,
            "herald bench: %" PRIu64 " of %zu connections open, "
            "holding for %g s\n",
            b->opened, b->nconns, b->duration);
    fflush(stderr);
    on_warmup_end(&b->phase_timer); /* the hold is the measured window */
    return;
  }
  if (b->open == 0) {
    begin_drain(b); /* nothing to measure */
    return;
  }
  b->phase = PH_WARMUP;
  start_traffic(b);
  if (b->warmup > 0) {
    phase_timer_start(b, on_warmup_end, b->warmup);
  } else {
    on_warmup_end(&b->phase_timer);
  }
}

/* ---- main --------------------------------------------------------------- */

/* Idle mode needs one descriptor per connection: raise the soft limit to
 * the hard one when that is short. */
static void raise_nofile(size_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need) {
    return;
  }
  rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need
                    ? rl.rlim_max
                    : (rlim_t)need;
  (void)setrlimit(RLIMIT_NOFILE, &rl);
}

static void free_bench(bench *b) {
  if (b->conns) {
    for (size_t i = 0; i < b->nconns; i++) {
      free(b->conns[i].sent);
    }
  }
  free(b->conns);
  free(b->payload);
  for (size_t i = 0; i < b->nsources; i++) {
    free(b->sources[i]);
  }
  free(b->sources);
}

static void on_timer_closed(uv_handle_t *h) {
  bench *b = h->data;
  b->timers_live--;
}

int herald_cmd_bench(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if ((strcmp(argv[i], "--mode") == 0 && i + 1 < argc &&
         strcmp(argv[i + 1], "fanout") == 0) ||
        strcmp(argv[i], "--mode=fanout") == 0) {
      return herald_bench_fanout(argc, argv);
    }
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      bench_usage(stdout);
      return 0;
    }
  }
  static bench bs; /* the histogram is 30 KB: keep it off the stack */
  bench *b = &bs;
  memset(b, 0, sizeof(*b));
  b->mode = MODE_ECHO;
  b->nconns = 1;
  b->inflight = 1;
  b->size = 32;
  b->duration = 5;
  b->warmup = 1;
  b->connect_inflight = 256;
  b->server_pid = -1;
  int rv = bench_parse_args(b, argc, argv);
  if (rv != 0) {
    free_bench(b);
    return rv;
  }
  if (b->mode != MODE_ECHO) {
    b->inflight = 1;
  }
  if (b->mode == MODE_CONNECT) {
    b->connect_inflight = b->nconns; /* every slot reconnects at once */
  }
  raise_nofile(b->nconns + 64);

  herald_client_config_init(&b->ccfg);
  b->ccfg.url = b->url;
  b->ccfg.core.max_message_size = b->size + 1024;
  b->ccfg.core.max_frame_size = b->size + 1024;
  b->ccfg.core.deflate.enabled = b->deflate;
  b->ccfg.tls_ca_file = b->ca_file;
  b->ccfg.tls_insecure = b->insecure;
  /* Keep the in-flight messages of one connection under the high-water
   * mark, so sends never report backpressure. */
  size_t window = (size_t)b->inflight * (b->size + 14);
  if (window + (1u << 20) > b->ccfg.limits.send_high_water) {
    b->ccfg.limits.send_high_water = window + (1u << 20);
    b->ccfg.limits.send_hard_cap = 2 * window + (16u << 20);
  }
  if (b->rate > 0) {
    /* Open loop: whatever the server has not read yet stays queued; only
     * a server that stops reading for good runs into the cap. */
    b->ccfg.limits.send_high_water = 64u << 20;
    b->ccfg.limits.send_hard_cap = 256u << 20;
  }
  b->op = b->binary ? HERALD_OP_BINARY : HERALD_OP_TEXT;
  b->payload = malloc(b->size ? b->size : 1);
  b->conns = calloc(b->nconns, sizeof(bconn));
  if (b->payload == NULL || b->conns == NULL) {
    fprintf(stderr, "herald bench: out of memory\n");
    free_bench(b);
    return 1;
  }
  for (size_t i = 0; i < b->size; i++) {
    /* Text: printable ASCII; binary: every byte value. */
    b->payload[i] =
        b->binary ? (uint8_t)(i * 131u + 7u) : (uint8_t)('a' + i % 26);
  }
  if (b->mode == MODE_ECHO && b->rate <= 0) {
    for (size_t i = 0; i < b->nconns; i++) {
      b->conns[i].cap = b->inflight;
      b->conns[i].sent = malloc(b->inflight * sizeof(uint64_t));
      if (b->conns[i].sent == NULL) {
        fprintf(stderr, "herald bench: out of memory\n");
        free_bench(b);
        return 1;
      }
    }
  }
  rv = herald_loop_new(&b->loop, NULL);
  if (rv != 0) {
    fprintf(stderr, "herald bench: %s\n", herald_rt_strerror(rv));
    free_bench(b);
    return 1;
  }
  uv_loop_t *uv = herald_loop_uv(b->loop);
  uv_timer_init(uv, &b->phase_timer);
  uv_timer_init(uv, &b->rate_timer);
  uv_timer_init(uv, &b->progress_timer);
  b->phase_timer.data = b->rate_timer.data = b->progress_timer.data = b;
  b->timers_live = 3;
  b->progress = !b->json && isatty(STDERR_FILENO);
  if (b->progress) {
    uv_timer_start(&b->progress_timer, on_progress, 1000, 1000);
  }
  b->setup_start = now_ns();
  if (b->mode == MODE_CONNECT) {
    /* No setup phase: every slot starts now and the warm-up begins. */
    for (size_t i = 0; i < b->nconns; i++) {
      start_conn(b, &b->conns[i],
                 (size_t)(b->src_rr++ % (b->nsources ? b->nsources : 1)));
    }
    b->next_start = b->nconns;
    b->setup_end = now_ns();
    b->phase = PH_WARMUP;
    if (b->warmup > 0) {
      phase_timer_start(b, on_warmup_end, b->warmup);
    } else {
      on_warmup_end(&b->phase_timer);
    }
  } else {
    setup_progress(b);
  }
  herald_loop_run(b->loop);

  progress_clear(b);
  bench_report(b);
  uint64_t errors = b->failed + b->lost + b->bad_echo + b->send_errors;
  int status = 0;
  if (b->mode != MODE_CONNECT && errors > 0) {
    status = 1;
  }
  if (b->mode == MODE_CONNECT && b->connects == 0) {
    status = 1;
  }
  if (b->mode == MODE_ECHO && b->msgs == 0) {
    status = 1; /* nothing measured is not a result */
  }
  uv_close((uv_handle_t *)&b->phase_timer, on_timer_closed);
  uv_close((uv_handle_t *)&b->rate_timer, on_timer_closed);
  uv_close((uv_handle_t *)&b->progress_timer, on_timer_closed);
  if (b->live == 0) {
    /* Clean teardown; with connections still closing, exiting frees them. */
    while (b->timers_live) {
      uv_run(herald_loop_uv(b->loop), UV_RUN_NOWAIT);
    }
    herald_loop_del(b->loop);
    free_bench(b);
  }
  return status;
}
