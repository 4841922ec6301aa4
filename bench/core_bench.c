/*
 * core_bench.c - the protocol core's receive path, beside memcpy.
 *
 * For 16 B, 1 KiB, 64 KiB and 1 MiB messages it measures, in one run:
 *   memcpy      copying the same number of bytes (the yardstick)
 *   mask        herald__mask over the payload bytes alone
 *   utf8        herald__utf8_validate over the payload alone (ASCII, and
 *               multi-byte text: 2-, 3- and 4-byte characters mixed)
 *   recv        herald_conn_recv on a server connection: frame parsing,
 *               unmasking in place, UTF-8 validation, event per message
 * Each figure is the median of REPS runs of about 100 ms. The frames carry
 * the all-zero masking key so that in-place unmasking leaves the input as it
 * was and the same buffer can be parsed again; the XOR work is identical for
 * every key (herald__mask has no shortcut for zero).
 *
 * Output: a Markdown table on stdout, and one JSON line per row on stderr
 * when --json is given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mask.h"
#include "core/utf8.h"
#include "herald/core.h"

#define REPS 7

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static volatile uint64_t sink;

/* Runs fn(arg) repeatedly for about 100 ms, REPS times; returns the median
 * number of seconds per call. */
static double measure(void (*fn)(void *), void *arg) {
  double t[REPS];
  /* Calibrate: how many calls make 100 ms. */
  uint64_t iters = 1;
  for (;;) {
    double t0 = now();
    for (uint64_t i = 0; i < iters; i++) {
      fn(arg);
    }
    double dt = now() - t0;
    if (dt > 0.02) {
      iters = (uint64_t)((double)iters * 0.1 / dt) + 1;
      break;
    }
    iters *= 4;
  }
  for (int r = 0; r < REPS; r++) {
    double t0 = now();
    for (uint64_t i = 0; i < iters; i++) {
      fn(arg);
    }
    t[r] = (now() - t0) / (double)iters;
  }
  qsort(t, REPS, sizeof(double), cmp_double);
  return t[REPS / 2];
}

typedef struct job {
  uint8_t *src, *dst; /* payload-sized buffers (memcpy/mask/utf8) */
  size_t len;         /* payload bytes per call */
  uint8_t *frames;    /* nframes masked frames, back to back */
  size_t frames_len;
  size_t nframes;
  herald_conn *conn;
} job;

static void run_memcpy(void *arg) {
  job *j = arg;
  memcpy(j->dst, j->src, j->len);
  sink += j->dst[j->len - 1];
}

static void run_mask(void *arg) {
  job *j = arg;
  static const uint8_t key[4] = {0, 0, 0, 0};
  sink += herald__mask(j->src, j->len, key, 1);
}

static void run_utf8(void *arg) {
  job *j = arg;
  uint32_t st = 0;
  if (herald__utf8_validate(&st, j->src, j->len) != 0 || st != 0) {
    fprintf(stderr, "bench input is not valid UTF-8\n");
    exit(1);
  }
  sink += st;
}

static void run_recv(void *arg) {
  job *j = arg;
  size_t off = 0, events = 0;
  while (off < j->frames_len) {
    herald_event ev;
    int rv =
        herald_conn_recv(j->conn, j->frames + off, j->frames_len - off, &ev);
    if (rv <= 0) {
      fprintf(stderr, "recv failed: %s\n", herald_strerror(rv));
      exit(1);
    }
    off += (size_t)rv;
    events += ev.type != HERALD_EV_NONE;
  }
  if (events != j->nframes) {
    fprintf(stderr, "expected %zu events, got %zu\n", j->nframes, events);
    exit(1);
  }
  sink += events;
}

/* Fills p with n bytes of text: ASCII, or a mix of 2-, 3- and 4-byte UTF-8
 * characters (ASCII padding where a character would not fit). */
static void fill_text(uint8_t *p, size_t n, int multibyte) {
  static const char *chars[] = {"\xce\xba", "\xe1\xbd\xb9", "\xf0\x9f\x98\x80",
                                "\xd0\xb6", "\xe2\x82\xac"};
  size_t i = 0, k = 0;
  while (i < n) {
    if (!multibyte) {
      p[i] = (uint8_t)('a' + i % 26);
      i++;
      continue;
    }
    const char *c = chars[k++ % 5];
    size_t cl = strlen(c);
    if (i + cl > n) {
      p[i++] = 'x';
      continue;
    }
    memcpy(p + i, c, cl);
    i += cl;
  }
}

static herald_conn *open_server(const herald_config *cfg) {
  static const char req[] =
      "GET / HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: "
      "dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n";
  herald_conn *c;
  uint8_t buf[sizeof(req)];
  memcpy(buf, req, sizeof(req));
  herald_event ev;
  if (herald_conn_new(&c, cfg) != 0 ||
      herald_conn_recv(c, buf, sizeof(req) - 1, &ev) <= 0 ||
      herald_conn_accept(c, NULL) != 0) {
    fprintf(stderr, "handshake failed\n");
    exit(1);
  }
  struct iovec iov[2];
  int n = herald_conn_output(c, iov, 2);
  herald_conn_output_consumed(c, n ? iov[0].iov_len : 0);
  return c;
}

int main(int argc, char **argv) {
  int json = argc > 1 && strcmp(argv[1], "--json") == 0;
  static const size_t sizes[] = {16, 1024, 65536, 1 << 20};
  herald_config cfg;
  herald_config_init(&cfg, HERALD_ROLE_SERVER);
  cfg.max_frame_size = cfg.max_message_size = 64u << 20;

  printf("| message | kind | memcpy GB/s | mask GB/s (ratio) | UTF-8 GB/s "
         "(ratio) | recv GB/s (ratio) | recv messages/s |\n");
  printf("|---|---|---|---|---|---|---|\n");
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
    for (int multibyte = 0; multibyte <= 1; multibyte++) {
      size_t len = sizes[s];
      /* About 4 MiB of frames per recv call (at least one frame). */
      size_t nframes = (4u << 20) / (len + 14);
      if (nframes == 0) {
        nframes = 1;
      }
      job j = {0};
      j.len = len;
      j.src = malloc(len);
      j.dst = malloc(len);
      fill_text(j.src, len, multibyte);
      j.frames = malloc(nframes * (len + 14));
      j.nframes = nframes;
      static const uint8_t zero_key[4] = {0, 0, 0, 0};
      for (size_t i = 0; i < nframes; i++) {
        size_t h = herald_frame_header(j.frames + j.frames_len, HERALD_OP_TEXT,
                                       1, 0, len, zero_key);
        memcpy(j.frames + j.frames_len + h, j.src, len);
        j.frames_len += h + len;
      }
      j.conn = open_server(&cfg);

      double t_copy = measure(run_memcpy, &j);
      double t_mask = measure(run_mask, &j);
      double t_utf8 = measure(run_utf8, &j);
      double t_recv = measure(run_recv, &j);
      double gb_copy = (double)len / t_copy / 1e9;
      double gb_mask = (double)len / t_mask / 1e9;
      double gb_utf8 = (double)len / t_utf8 / 1e9;
      double gb_recv = (double)(len * nframes) / t_recv / 1e9;
      double msgs = (double)nframes / t_recv;
      const char *kind = multibyte ? "text, multi-byte" : "text, ASCII";
      char rate[32];
      if (msgs >= 1e6) {
        snprintf(rate, sizeof(rate), "%.1f M", msgs / 1e6);
      } else if (msgs >= 1e3) {
        snprintf(rate, sizeof(rate), "%.1f k", msgs / 1e3);
      } else {
        snprintf(rate, sizeof(rate), "%.0f", msgs);
      }
      printf("| %zu B | %s | %.1f | %.1f (%.2f) | %.1f (%.2f) | %.1f (%.2f) | "
             "%s |\n",
             len, kind, gb_copy, gb_mask, gb_mask / gb_copy, gb_utf8,
             gb_utf8 / gb_copy, gb_recv, gb_recv / gb_copy, rate);
      if (json) {
        fprintf(stderr,
                "{\"size\":%zu,\"multibyte\":%d,\"memcpy_gbps\":%.3f,"
                "\"mask_gbps\":%.3f,\"utf8_gbps\":%.3f,\"recv_gbps\":%.3f,"
                "\"recv_msgs_per_s\":%.0f}\n",
                len, multibyte, gb_copy, gb_mask, gb_utf8, gb_recv, msgs);
      }
      herald_conn_del(j.conn);
      free(j.src);
      free(j.dst);
      free(j.frames);
    }
  }
  return 0;
}
