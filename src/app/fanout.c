/* fanout.c - `herald bench --mode fanout`: load for a push server that
 * speaks docs/protocol.md (herald serve, or bench/fanout's Bun server that
 * speaks the same subset).
 *
 * Subscribers: --connections WebSockets, each sends `connect` and then
 * `subscribe` to channel "<prefix>i % --channels" (so every channel has
 * connections / channels subscribers), and counts the pushes it gets.
 * The default prefix, "bench:c", names channels of the namespace "bench"
 * that `herald serve --demo` (make run) has, with publishing on; against
 * another configuration give a --prefix in a namespace whose "publish" is
 * true (docs/config.md). A refused
 * subscribe or publish stops the run at once with the server's reason and
 * what to change.
 * Publishers: --publishers WebSockets send `publish` commands, open loop, at
 * --rate publications per second in all, to the channels in turn; each
 * carries {"t": send time in ns, "p": padding to --size bytes}.
 *
 * Phases: setup (connect and subscribe everyone, at most --connect-inflight
 * at once), warm-up, measured window, then a short drain. Counted in the
 * window: publications sent, pushes delivered (and the deliveries the
 * publications sent in the window call for), and the publish-to-delivery
 * latency of every push received. With --server-pid it also reports the
 * server's CPU over the window and its RSS before the first connection and
 * once everyone is subscribed (bytes per subscribed client).
 */
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

enum { S_CONNECTING, S_SUBSCRIBING, S_READY, S_DONE };
enum { F_SETUP, F_WARMUP, F_MEASURE, F_DRAIN, F_END };

typedef struct fanout fanout;

typedef struct fconn {
  fanout *f;
  herald_ws *ws;
  uint32_t channel; /* subscribers */
  uint8_t state;
  uint8_t publisher;
} fconn;

struct fanout {
  /* options */
  const char *url;
  const char *prefix;
  size_t nsubs, nchans, npubs, connect_inflight;
  double rate, duration, warmup;
  size_t size;
  long server_pid;
  int json;
  /* state */
  herald_loop *loop;
  herald_client_config ccfg;
  herald_client_config pcfg; /* publishers: ccfg, or --publish-url */
  const char *pub_url;
  fconn *subs, *pubs;
  size_t next_start, connecting, ready, live, pubs_ready;
  int pubs_started;
  uint64_t failed, lost, errors, bad;
  int phase;
  uint64_t t0, setup_end, win_start, win_end, pub_start;
  uint64_t published, sent_total, pub_acks, pub_refused;
  uint64_t sent_window, expected_window, delivered_window, delivered_total;
  bp_snap srv_start, srv_end;
  double bench_cpu_start, bench_cpu_end;
  long rss_before, rss_ready;
  char refusal[768]; /* the first refusal that stopped the run */
  hist lat;
  uv_timer_t tick, phase_timer;
  int timers_live;
  char *msg;
  size_t msg_cap;
  uint64_t next_id;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* VmRSS of /proc/PID/status in KiB, or -1. */
static long proc_rss_kib(long pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%ld/status", pid);
  FILE *fp = fopen(path, "r");
  long kib = -1;
  if (fp == NULL) {
    return -1;
  }
  while (fgets(line, sizeof line, fp)) {
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kib = strtol(line + 6, NULL, 10);
      break;
    }
  }
  fclose(fp);
  return kib;
}

static void send_text(fconn *c, const char *s, size_t len) {
  int rv = herald_ws_send(c->ws, HERALD_OP_TEXT, s, len);
  if (rv < 0 || rv == HERALD_SEND_DROPPED) {
    c->f->errors++;
  }
}

static void start_next(fanout *f);
static void begin_warmup(fanout *f);

/* ---- pushes and replies -------------------------------------------------- */

/* The value of the number after `"key":` in s (bounded by len), or -1. */
static int64_t find_u64(const uint8_t *s, size_t len, const char *key) {
  size_t klen = strlen(key);
  const uint8_t *end = s + len;
  for (const uint8_t *p = s; p + klen < end;) {
    const uint8_t *q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL || q + klen + 1 >= end) {
      return -1;
    }
    if (memcmp(q + 1, key, klen) == 0 && q[klen + 1] == '"' &&
        q + klen + 2 < end && q[klen + 2] == ':') {
      const uint8_t *d = q + klen + 3;
      while (d < end && *d == ' ') {
        d++;
      }
      if (d == end || *d < '0' || *d > '9') {
        return -1;
      }
      uint64_t v = 0;
      while (d < end && *d >= '0' && *d <= '9') {
        v = v * 10 + (uint64_t)(*d++ - '0');
      }
      return (int64_t)v;
    }
    p = q + 1;
  }
  return -1;
}

static void stop_now(fanout *f);

/* The "message" string of an error reply, unescaped only as far as
 * needed to show it: up to the first unescaped quote. */
static void error_message(const uint8_t *s, size_t len, char *out,
                          size_t outlen) {
  static const char key[] = "\"message\":\"";
  const uint8_t *p = memmem(s, len, key, sizeof(key) - 1);
  size_t n = 0;
  if (p != NULL) {
    p += sizeof(key) - 1;
    while (p < s + len && *p != '"' && n + 1 < outlen) {
      if (*p == '\\' && p + 1 < s + len) {
        p++;
      }
      out[n++] = (char)*p++;
    }
  }
  if (n == 0) {
    snprintf(out, outlen, "%.*s", (int)(len > 200 ? 200 : len),
             (const char *)s);
    return;
  }
  out[n] = 0;
}

/* A subscribe or publish was refused: keep the server's reason with what
 * to change, and stop the run (its figures would mean nothing). */
static void refused(fanout *f, const char *what, uint32_t chan,
                    const uint8_t *data, size_t len) {
  if (f->refusal[0] != 0) {
    return;
  }
  char msg[160];
  error_message(data, len, msg, sizeof(msg));
  int64_t code = find_u64(data, len, "code");
  const char *hint = "";
  if (code == 101) {
    hint = "the server wants a token to connect (it is not anonymous)";
  } else if (code == 102) {
    hint = "the part of the channel before ':' names a namespace the "
           "server does not have (the default prefix bench:c needs "
           "herald serve --demo, or a namespace \"bench\" with "
           "\"publish\": true)";
  } else if (code == 103 && strcmp(what, "publish") == 0) {
    hint = "give the namespace \"publish\": true in the server's config "
           "(docs/config.md), or choose a --prefix in a namespace that has "
           "it (herald serve --demo has \"bench\": the default prefix)";
  } else if (code == 103) {
    hint = "the channel needs a subscription token (a private namespace)";
  } else if (code == 110) {
    hint = "over the server's rate limit for one connection: spread the "
           "rate over more --publishers, or raise rate_limits in the "
           "server's config";
  }
  snprintf(f->refusal, sizeof(f->refusal),
           "%s to %s%" PRIu32 " refused (%" PRId64 " %s)%s%s", what, f->prefix,
           chan, code, msg, hint[0] ? ": " : "", hint);
  stop_now(f);
}

static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  (void)ws;
  fconn *c = ud;
  fanout *f = c->f;
  uint64_t t = now_ns();
  if (op != HERALD_OP_TEXT) {
    f->bad++;
    return;
  }
  if (len > 8 && memcmp(data, "{\"push\":", 8) == 0) {
    int64_t sent = find_u64(data, len, "t");
    if (sent < 0) {
      return; /* join/leave or another push without a timestamp */
    }
    f->delivered_total++;
    if (f->phase == F_MEASURE) {
      f->delivered_window++;
      uint64_t at = f->t0 + (uint64_t)sent;
      hist_record(&f->lat, t > at ? t - at : 0);
    }
    return;
  }
  /* A reply: {"id":N,"result":...} or {"id":N,"error":...}. */
  int ok = len > 8 && memmem(data, len, "\"result\"", 8) != NULL;
  int64_t id = find_u64(data, len, "id");
  if (c->publisher) {
    if (ok) {
      f->pub_acks++;
    } else if (id != 1) {
      f->pub_refused++;
      refused(f, "publish", 0, data, len);
    } else {
      refused(f, "connect", 0, data, len);
    }
    return;
  }
  if (!ok) {
    f->failed++;
    c->state = S_DONE;
    herald_ws_close(c->ws, HERALD_CLOSE_NORMAL, NULL, 0);
    refused(f, id == 1 ? "connect" : "subscribe", c->channel, data, len);
    return;
  }
  if (id == 2 && c->state == S_SUBSCRIBING) {
    c->state = S_READY;
    f->ready++;
    start_next(f);
  }
}

static void on_open(herald_ws *ws, void *ud) {
  fconn *c = ud;
  fanout *f = c->f;
  char cmd[256];
  f->connecting--;
  if (f->phase >= F_DRAIN) {
    /* The run was stopped while this one was connecting. */
    c->state = S_DONE;
    herald_ws_close(ws, HERALD_CLOSE_NORMAL, NULL, 0);
    return;
  }
  send_text(c, "{\"id\":1,\"connect\":{}}", 21);
  if (c->publisher) {
    c->state = S_READY;
    f->pubs_ready++;
    start_next(f);
    return;
  }
  int n = snprintf(cmd, sizeof cmd,
                   "{\"id\":2,\"subscribe\":{\"channel\":\"%s%" PRIu32 "\"}}",
                   f->prefix, c->channel);
  c->state = S_SUBSCRIBING;
  (void)ws;
  send_text(c, cmd, (size_t)n);
}

static void on_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  (void)ws;
  fconn *c = ud;
  fanout *f = c->f;
  f->live--;
  if (c->state == S_CONNECTING) {
    f->connecting--;
    f->failed++;
    if (f->failed <= 3 && !f->json) {
      fprintf(stderr, "herald bench: cannot connect: %s\n",
              info->error ? info->error : "closed");
    }
    start_next(f);
  } else if (f->phase < F_DRAIN && c->state != S_DONE) {
    f->lost++;
    if (f->lost <= 3 && !f->json) {
      fprintf(stderr, "herald bench: connection lost: %u %.*s%s%s\n",
              info->code, (int)info->reasonlen,
              info->reason ? info->reason : "", info->error ? " " : "",
              info->error ? info->error : "");
    }
  }
  c->state = S_DONE;
  c->ws = NULL;
  if (f->phase == F_SETUP) {
    start_next(f);
  }
  if (f->live == 0 && f->phase >= F_DRAIN) {
    if (f->timers_live) {
      uv_close((uv_handle_t *)&f->tick, NULL);
      uv_close((uv_handle_t *)&f->phase_timer, NULL);
      f->timers_live = 0;
    }
  }
}

static const herald_ws_callbacks conn_cb = {
    .on_open = on_open, .on_message = on_message, .on_close = on_close};

static void start_conn(fanout *f, fconn *c) {
  c->f = f;
  c->state = S_CONNECTING;
  f->connecting++;
  f->live++;
  int rv = herald_connect(f->loop, c->publisher ? &f->pcfg : &f->ccfg, &conn_cb,
                          c, &c->ws);
  if (rv != 0) {
    f->connecting--;
    f->live--;
    f->failed++;
    c->state = S_DONE;
    if (!f->json && f->failed <= 3) {
      fprintf(stderr, "herald bench: cannot connect: %s\n",
              herald_rt_strerror(rv));
    }
  }
}

/* Setup: subscribers first, a bounded number connecting at once; then the
 * publishers; then the warm-up. */
static void start_next(fanout *f) {
  if (f->phase != F_SETUP) {
    return;
  }
  while (f->next_start < f->nsubs && f->connecting < f->connect_inflight) {
    fconn *c = &f->subs[f->next_start];
    c->channel = (uint32_t)(f->next_start % f->nchans);
    f->next_start++;
    start_conn(f, c);
  }
  size_t settled = f->ready + (size_t)f->failed;
  if (f->next_start < f->nsubs || settled < f->nsubs) {
    return;
  }
  if (f->ready == 0) {
    f->phase = F_END;
    herald_loop_stop(f->loop);
    return;
  }
  if (!f->pubs_started) {
    f->pubs_started = 1;
    for (size_t i = 0; i < f->npubs; i++) {
      f->pubs[i].publisher = 1;
      start_conn(f, &f->pubs[i]);
    }
    return;
  }
  if (f->pubs_ready == f->npubs) {
    if (f->phase == F_SETUP) {
      begin_warmup(f);
    }
  } else if (f->connecting == 0 && f->pubs_ready < f->npubs) {
    f->phase = F_END; /* a publisher could not connect */
    herald_loop_stop(f->loop);
  }
}

/* ---- publishing ---------------------------------------------------------- */

static void publish_one(fanout *f) {
  fconn *p = &f->pubs[f->sent_total % f->npubs];
  if (p->state != S_READY) {
    f->errors++;
    f->sent_total++;
    return;
  }
  size_t chan = (size_t)(f->sent_total % f->nchans);
  uint64_t t = now_ns() - f->t0;
  int n = snprintf(f->msg, f->msg_cap,
                   "{\"id\":%" PRIu64 ",\"publish\":{\"channel\":\"%s%zu\","
                   "\"data\":{\"t\":%" PRIu64 ",\"p\":\"",
                   f->next_id++, f->prefix, chan, t);
  size_t len = (size_t)n;
  size_t pad = f->size > len + 5 ? f->size - len - 5 : 0;
  memset(f->msg + len, 'x', pad);
  len += pad;
  memcpy(f->msg + len, "\"}}}", 4);
  len += 4;
  send_text(p, f->msg, len);
  f->sent_total++;
  if (f->phase == F_MEASURE) {
    f->sent_window++;
    /* Channel chan has one subscriber for every i < nsubs with i % nchans
     * == chan (those still subscribed are counted at setup's end). */
    f->expected_window +=
        f->nsubs / f->nchans + (chan < f->nsubs % f->nchans ? 1 : 0);
  }
}

/* Every millisecond: send the publications the schedule calls for. */
static void on_tick(uv_timer_t *t) {
  fanout *f = t->data;
  if (f->phase != F_WARMUP && f->phase != F_MEASURE) {
    return;
  }
  double elapsed = (double)(now_ns() - f->pub_start) / 1e9;
  uint64_t due = (uint64_t)(elapsed * f->rate);
  while (f->sent_total < due) {
    publish_one(f);
  }
}

static void on_drain_end(uv_timer_t *t) {
  fanout *f = t->data;
  f->phase = F_END;
  for (size_t i = 0; i < f->nsubs; i++) {
    if (f->subs[i].ws && f->subs[i].state != S_DONE) {
      f->subs[i].state = S_DONE;
      herald_ws_close(f->subs[i].ws, HERALD_CLOSE_NORMAL, NULL, 0);
    }
  }
  for (size_t i = 0; i < f->npubs; i++) {
    if (f->pubs[i].ws && f->pubs[i].state != S_DONE) {
      f->pubs[i].state = S_DONE;
      herald_ws_close(f->pubs[i].ws, HERALD_CLOSE_NORMAL, NULL, 0);
    }
  }
  if (f->live == 0 && f->timers_live) {
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_close((uv_handle_t *)&f->phase_timer, NULL);
    f->timers_live = 0;
  }
}

/* Ends the run early (a refusal): close everything now; the window, if it
 * had begun, ends here and is reported as not valid. */
static void stop_now(fanout *f) {
  if (f->phase >= F_DRAIN) {
    return;
  }
  if (f->phase == F_MEASURE) {
    f->win_end = now_ns();
    f->bench_cpu_end = bp_self_cpu();
  }
  if (f->timers_live) {
    uv_timer_stop(&f->tick);
    uv_timer_stop(&f->phase_timer);
  }
  on_drain_end(&f->phase_timer);
  if (f->live == 0) {
    herald_loop_stop(f->loop);
  }
}

static void on_measure_end(uv_timer_t *t) {
  fanout *f = t->data;
  f->win_end = now_ns();
  f->bench_cpu_end = bp_self_cpu();
  if (f->server_pid > 0) {
    bp_read(f->server_pid, &f->srv_end);
  }
  f->phase = F_DRAIN;
  uv_timer_start(&f->phase_timer, on_drain_end, 500, 0);
}

static void on_warmup_end(uv_timer_t *t) {
  fanout *f = t->data;
  f->phase = F_MEASURE;
  f->win_start = now_ns();
  f->bench_cpu_start = bp_self_cpu();
  if (f->server_pid > 0) {
    bp_read(f->server_pid, &f->srv_start);
  }
  uv_timer_start(&f->phase_timer, on_measure_end,
                 (uint64_t)(f->duration * 1000), 0);
}

static void begin_warmup(fanout *f) {
  f->setup_end = now_ns();
  if (f->server_pid > 0) {
    f->rss_ready = proc_rss_kib(f->server_pid);
  }
  f->phase = F_WARMUP;
  f->pub_start = now_ns();
  if (f->rate > 0) {
    uv_timer_start(&f->tick, on_tick, 1, 1);
  }
  uv_timer_start(&f->phase_timer, on_warmup_end, (uint64_t)(f->warmup * 1000),
                 0);
}

/* ---- options and report -------------------------------------------------- */

static void fanout_usage(FILE *out) {
  fprintf(out,
          "usage: herald bench URL --mode fanout [options]\n"
          "\n"
          "Load for a push server speaking docs/protocol.md: subscribers "
          "and\n"
          "publishers over WebSocket; counts deliveries and "
          "publish-to-delivery\n"
          "latency.\n"
          "\n"
          "  --connections N      subscribers (1000)\n"
          "  --channels N         channels; subscriber i takes channel "
          "i %% N (1)\n"
          "  --prefix P           channel name prefix (bench:c: the namespace "
          "\"bench\"\n"
          "                       of herald serve --demo)\n"
          "  --rate R             publications per second in all (100); 0: "
          "none,\n"
          "                       only hold the subscriptions\n"
          "  --publishers N       publishing connections (1)\n"
          "  --publish-url URL    publishers connect here instead (another "
          "node)\n"
          "  --size BYTES         publish command size, about (100)\n"
          "  --duration S         measured seconds (5)\n"
          "  --warmup S           seconds before measuring (1)\n"
          "  --connect-inflight N connects outstanding at once during "
          "setup (256)\n"
          "  --server-pid PID     report the server's CPU over the window "
          "and its RSS\n"
          "                       per subscribed client\n"
          "  --json               print only the JSON result line\n"
          "  --help               this text\n"
          "\n"
          "Exit status: 0 ok, 1 a connection failed, was lost or a "
          "publication was\nrefused, 2 usage error.\n");
}

static int parse_seconds(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end != 0 || v < 0 || v > 3600) {
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_args(fanout *f, int argc, char **argv) {
  for (int i = 1; i < argc;) {
    const char *v;
    int r;
    uint64_t n;
    if (strcmp(argv[i], "--json") == 0) {
      f->json = 1;
      i++;
      continue;
    }
#define SIZE_OPT(name, field, max)                                             \
  if ((r = cli_option(argc, argv, &i, name, &v)) != 0) {                       \
    if (r < 0 || cli_parse_uint(v, max, &n) != 0) {                            \
      fprintf(stderr, "herald bench: %s takes a number up to %llu\n", name,    \
              (unsigned long long)(max));                                      \
      return 2;                                                                \
    }                                                                          \
    f->field = (size_t)n;                                                      \
    continue;                                                                  \
  }
    SIZE_OPT("--connections", nsubs, 1000000)
    SIZE_OPT("--channels", nchans, 1000000)
    SIZE_OPT("--publishers", npubs, 64)
    SIZE_OPT("--connect-inflight", connect_inflight, 100000)
#undef SIZE_OPT
    if ((r = cli_option(argc, argv, &i, "--mode", &v)) != 0) {
      continue; /* fanout: how we got here */
    }
    if ((r = cli_option(argc, argv, &i, "--publish-url", &v)) != 0) {
      if (r < 0) {
        return 2;
      }
      f->pub_url = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--prefix", &v)) != 0) {
      if (r < 0 || strlen(v) > 100) {
        return 2;
      }
      f->prefix = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--size", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &n) != 0 || n > (1u << 20)) {
        fprintf(stderr, "herald bench: --size takes up to 1M\n");
        return 2;
      }
      f->size = (size_t)n;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--rate", &v)) != 0) {
      char *end;
      f->rate = r < 0 ? -1 : strtod(v, &end);
      if (r < 0 || end == v || *end || f->rate < 0 || f->rate > 1e7) {
        fprintf(stderr, "herald bench: --rate takes 0..10000000\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--duration", &v)) != 0) {
      if (r < 0 || parse_seconds(v, &f->duration) != 0) {
        fprintf(stderr, "herald bench: --duration takes seconds\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--warmup", &v)) != 0) {
      if (r < 0 || parse_seconds(v, &f->warmup) != 0) {
        fprintf(stderr, "herald bench: --warmup takes seconds\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--server-pid", &v)) != 0) {
      if (r < 0 || cli_parse_uint(v, 1u << 30, &n) != 0 || n == 0) {
        fprintf(stderr, "herald bench: --server-pid takes a PID\n");
        return 2;
      }
      f->server_pid = (long)n;
      continue;
    }
    if (argv[i][0] == '-') {
      fprintf(stderr, "herald bench: unknown option '%s' for --mode fanout\n",
              argv[i]);
      fanout_usage(stderr);
      return 2;
    }
    if (f->url) {
      fprintf(stderr, "herald bench: more than one URL\n");
      return 2;
    }
    f->url = argv[i++];
  }
  if (f->url == NULL) {
    fprintf(stderr, "herald bench: missing URL\n");
    fanout_usage(stderr);
    return 2;
  }
  if (f->nsubs == 0 || f->nchans == 0 || f->npubs == 0 ||
      f->connect_inflight == 0 || f->duration <= 0) {
    fprintf(stderr, "herald bench: connections, channels, publishers, "
                    "connect-inflight and duration must be above 0\n");
    return 2;
  }
  return 0;
}

/* A quantile for the text report, or "n/a" without samples. */
static const char *q_txt(const hist *h, double q, char *buf, size_t n,
                         int json) {
  if (h->total == 0) {
    return json ? "null" : "n/a";
  }
  double v = q < 0 ? (double)h->max / 1000.0 : hist_quantile_us(h, q);
  snprintf(buf, n, json ? "%.1f" : "%.1f us", v);
  return buf;
}

static void report(fanout *f) {
  double win =
      f->win_end > f->win_start ? (double)(f->win_end - f->win_start) / 1e9 : 0;
  double delivered = win > 0 ? (double)f->delivered_window / win : 0;
  double published = win > 0 ? (double)f->sent_window / win : 0;
  double ratio = f->expected_window
                     ? (double)f->delivered_window / (double)f->expected_window
                     : 0;
  double cpu_s = -1, thread_s = -1;
  int srv_ok = f->server_pid > 0 && f->srv_start.ok && f->srv_end.ok &&
               f->srv_end.cpu >= f->srv_start.cpu && win > 0;
  if (srv_ok) {
    cpu_s = f->srv_end.cpu - f->srv_start.cpu;
    thread_s = bp_busiest_thread(&f->srv_start, &f->srv_end);
  }
  double per_sub = -1;
  if (f->rss_before > 0 && f->rss_ready > 0 && f->ready > 0) {
    per_sub =
        (double)(f->rss_ready - f->rss_before) * 1024.0 / (double)f->ready;
  }
  /* setup_end stays 0 when the run never got past setup (everyone
   * refused or failed): there is no setup time then, not a negative one. */
  int setup_known = f->setup_end >= f->t0 && f->setup_end != 0;
  double setup = setup_known ? (double)(f->setup_end - f->t0) / 1e9 : 0;
  uint64_t errors = f->failed + f->lost + f->errors + f->pub_refused + f->bad;
  int valid = f->refusal[0] == 0 && win > 0 && f->ready > 0 &&
              (f->rate == 0 || f->delivered_window > 0);
  const char *why = f->refusal[0]   ? "refused"
                    : f->ready == 0 ? "no subscriber was subscribed"
                    : win <= 0      ? "nothing was measured"
                                    : "nothing was delivered";
  char verdict[320];
  const char *who = "n/a";
  if (valid) {
    int reached = f->rate > 0 && published >= 0.95 * f->rate && ratio >= 0.95;
    bp_limit lim = {win,
                    f->bench_cpu_end - f->bench_cpu_start,
                    cpu_s,
                    thread_s,
                    f->rate > 0 ? reached : -1,
                    "raise --rate or --connections"};
    bp_verdict(&lim, verdict, sizeof(verdict), &who);
  } else {
    snprintf(verdict, sizeof(verdict), "n/a (%s)", why);
  }
  char q[6][32];
  if (!f->json) {
    printf("herald bench fanout %s\n", f->url);
    printf("  subscribers   %zu on %zu channel(s) %s0..%zu (%zu subscribed, "
           "%" PRIu64 " failed, %" PRIu64 " lost)\n",
           f->nsubs, f->nchans, f->prefix, f->nchans - 1, f->ready, f->failed,
           f->lost);
    printf("  publishing    %.0f/s asked, %.0f/s sent over %zu "
           "connection(s), %zu-byte commands\n",
           f->rate, published, f->npubs, f->size);
    if (setup_known) {
      printf("  setup         %.3f s\n", setup);
    } else {
      printf("  setup         n/a (not finished)\n");
    }
    printf("  measured      %.3f s\n", win);
    if (valid) {
      printf("  delivered     %.0f msgs/s (%.1f %% of what was published in "
             "the window)\n",
             delivered, ratio * 100);
    } else {
      printf("  delivered     n/a (%s)\n", why);
    }
    printf("  latency       p50 %s, p90 %s, p95 %s, p99 %s, p99.9 %s, max "
           "%s\n",
           q_txt(&f->lat, 0.5, q[0], 32, 0), q_txt(&f->lat, 0.9, q[1], 32, 0),
           q_txt(&f->lat, 0.95, q[2], 32, 0), q_txt(&f->lat, 0.99, q[3], 32, 0),
           q_txt(&f->lat, 0.999, q[4], 32, 0), q_txt(&f->lat, -1, q[5], 32, 0));
    if (cpu_s >= 0) {
      printf("  server CPU    %.2f s (%.0f %% of one core", cpu_s,
             cpu_s / win * 100);
      if (thread_s >= 0) {
        printf("; busiest thread %.0f %%", thread_s / win * 100);
      }
      printf(")\n");
    }
    if (per_sub >= 0) {
      printf("  server RSS    %ld KiB before, %ld KiB subscribed: %.0f bytes "
             "per subscribed client\n",
             f->rss_before, f->rss_ready, per_sub);
    }
    printf("  limit         %s\n", verdict);
    printf("  errors        %" PRIu64 " (failed %" PRIu64 ", lost %" PRIu64
           ", send errors %" PRIu64 ", refused publishes %" PRIu64 ")\n",
           errors, f->failed, f->lost, f->errors, f->pub_refused);
    if (f->refusal[0]) {
      printf("  refused       %s\n", f->refusal);
    }
  }
  char setup_s[32];
  snprintf(setup_s, sizeof(setup_s), "%.3f", setup);
  printf("{\"mode\":\"fanout\",\"url\":\"%s\",\"prefix\":\"%s\","
         "\"subscribers\":%zu,\"channels\":%zu,\"subscribed\":%zu,"
         "\"rate\":%.1f,\"setup_s\":%s,\"valid\":%s,",
         f->url, f->prefix, f->nsubs, f->nchans, f->ready, f->rate,
         setup_known ? setup_s : "null", valid ? "true" : "false");
  if (valid) {
    printf("\"published_per_s\":%.1f,\"delivered_per_s\":%.1f,"
           "\"delivery_ratio\":%.4f,",
           published, delivered, ratio);
  } else {
    printf("\"published_per_s\":null,\"delivered_per_s\":null,"
           "\"delivery_ratio\":null,");
  }
  printf("\"latency_us\":{\"p50\":%s,\"p90\":%s,\"p95\":%s,\"p99\":%s,"
         "\"p999\":%s,\"max\":%s},\"duration_s\":%.3f,\"limit\":\"%s\",",
         q_txt(&f->lat, 0.5, q[0], 32, 1), q_txt(&f->lat, 0.9, q[1], 32, 1),
         q_txt(&f->lat, 0.95, q[2], 32, 1), q_txt(&f->lat, 0.99, q[3], 32, 1),
         q_txt(&f->lat, 0.999, q[4], 32, 1), q_txt(&f->lat, -1, q[5], 32, 1),
         win, who);
  if (cpu_s >= 0) {
    printf("\"server_cpu_s\":%.3f,", cpu_s);
  } else {
    printf("\"server_cpu_s\":null,");
  }
  if (per_sub >= 0) {
    printf("\"server_rss_before_kib\":%ld,\"server_rss_subscribed_kib\":%ld,"
           "\"server_bytes_per_subscriber\":%.0f,",
           f->rss_before, f->rss_ready, per_sub);
  }
  printf("\"failed\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"send_errors\":%" PRIu64
         ",\"refused\":%" PRIu64 ",\"errors\":%" PRIu64 "}\n",
         f->failed, f->lost, f->errors, f->pub_refused, errors);
  fflush(stdout);
  if (f->refusal[0] && f->json) {
    fprintf(stderr, "herald bench: %s\n", f->refusal);
  }
}

int herald_bench_fanout(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fanout_usage(stdout);
      return 0;
    }
  }
  static fanout fs; /* the histogram is 30 KB: keep it off the stack */
  fanout *f = &fs;
  memset(f, 0, sizeof *f);
  f->prefix = "bench:c";
  f->nsubs = 1000;
  f->nchans = 1;
  f->npubs = 1;
  f->connect_inflight = 256;
  f->rate = 100;
  f->size = 100;
  f->duration = 5;
  f->warmup = 1;
  f->server_pid = -1;
  int rv = parse_args(f, argc, argv);
  if (rv != 0) {
    return rv;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  herald_client_config_init(&f->ccfg);
  f->ccfg.url = f->url;
  f->ccfg.core.max_message_size = 4u << 20;
  f->ccfg.core.max_frame_size = 4u << 20;
  f->ccfg.limits.send_high_water = 16u << 20;
  f->ccfg.limits.send_hard_cap = 256u << 20;
  f->pcfg = f->ccfg;
  if (f->pub_url) {
    f->pcfg.url = f->pub_url;
  }
  f->msg_cap = f->size + 512;
  f->msg = malloc(f->msg_cap);
  f->subs = calloc(f->nsubs, sizeof(fconn));
  f->pubs = calloc(f->npubs, sizeof(fconn));
  if (f->msg == NULL || f->subs == NULL || f->pubs == NULL) {
    fprintf(stderr, "herald bench: out of memory\n");
    free(f->msg);
    free(f->subs);
    free(f->pubs);
    return 1;
  }
  rv = herald_loop_new(&f->loop, NULL);
  if (rv != 0) {
    fprintf(stderr, "herald bench: %s\n", herald_rt_strerror(rv));
    return 1;
  }
  uv_loop_t *uv = herald_loop_uv(f->loop);
  uv_timer_init(uv, &f->tick);
  uv_timer_init(uv, &f->phase_timer);
  f->tick.data = f->phase_timer.data = f;
  f->timers_live = 1;
  f->next_id = 3;
  f->t0 = now_ns();
  if (f->server_pid > 0) {
    f->rss_before = proc_rss_kib(f->server_pid);
  }
  f->phase = F_SETUP;
  start_next(f);
  herald_loop_run(f->loop);
  report(f);
  uint64_t errors = f->failed + f->lost + f->errors + f->pub_refused + f->bad;
  if (f->timers_live) {
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_close((uv_handle_t *)&f->phase_timer, NULL);
    f->timers_live = 0;
    uv_run(uv, UV_RUN_NOWAIT);
  }
  if (f->live == 0) {
    herald_loop_del(f->loop);
  }
  free(f->msg);
  free(f->subs);
  free(f->pubs);
  return errors || f->ready == 0 || f->refusal[0] ? 1 : 0;
}
