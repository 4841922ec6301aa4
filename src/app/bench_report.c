/* bench_report.c - what `herald bench` prints after a run: throughput,
 * latency percentiles, errors, the CPU of both sides and which was the
 * limit, as text or JSON. */
#include "app/bench_int.h"

static const char *mode_name(enum mode m) {
  return m == MODE_ECHO ? "echo" : m == MODE_CONNECT ? "connect" : "idle";
}

/* A latency quantile for the text report: "123.4 us", or "n/a" when
 * nothing was measured (a failed run has no latency, not a latency of 0). */
static const char *lat_txt(const hist *h, double q, char *buf, size_t n) {
  if (h->total == 0) {
    return "n/a";
  }
  double v = q < 0 ? (double)h->max / 1000.0 : hist_quantile_us(h, q);
  snprintf(buf, n, "%.1f us", v);
  return buf;
}

/* The same for JSON: a number, or null. */
static const char *lat_json(const hist *h, double q, char *buf, size_t n) {
  if (h->total == 0) {
    return "null";
  }
  double v = q < 0 ? (double)h->max / 1000.0 : hist_quantile_us(h, q);
  snprintf(buf, n, "%.1f", v);
  return buf;
}

static void print_latency(const char *label, const hist *h) {
  char q[6][32];
  printf("  %-13s p50 %s, p90 %s, p95 %s, p99 %s, p99.9 %s, max %s", label,
         lat_txt(h, 0.50, q[0], 32), lat_txt(h, 0.90, q[1], 32),
         lat_txt(h, 0.95, q[2], 32), lat_txt(h, 0.99, q[3], 32),
         lat_txt(h, 0.999, q[4], 32), lat_txt(h, -1, q[5], 32));
  if (h->total) {
    printf(", mean %.1f us", h->sum / (double)h->total / 1000);
  }
  printf("\n");
}

void bench_report(const bench *b) {
  double secs = b->t1 > b->t0 ? (double)(b->t1 - b->t0) / 1e9 : 0;
  double cpu = b->cpu1 - b->cpu0;
  double rate = 0, mbs = 0;
  uint64_t count = b->mode == MODE_ECHO ? b->msgs : b->connects;
  if (secs > 0) {
    rate = (double)count / secs;
    mbs = (double)b->bytes / secs / 1e6;
  }
  double srv = b->srv_ok ? b->srv1.cpu - b->srv0.cpu : -1;
  double srv_thread = b->srv_ok ? bp_busiest_thread(&b->srv0, &b->srv1) : -1;
  double srv_us = b->srv_ok && count ? srv * 1e6 / (double)count : -1;
  /* Setup ends once every connect has settled; a run that never got there
   * (or a clock that did not move) has no setup time to report. */
  int setup_known = b->setup_end >= b->setup_start && b->setup_end != 0;
  double setup =
      setup_known ? (double)(b->setup_end - b->setup_start) / 1e9 : 0;
  uint64_t errors = b->failed + b->lost + b->bad_echo + b->send_errors;
  /* A figure is given only for a run that measured something and whose
   * echoes were all right: a wrong answer's speed means nothing. */
  int valid = secs > 0 && count > 0 && b->bad_echo == 0;
  const char *why = b->bad_echo      ? "the server's replies were not echoes"
                    : b->opened == 0 ? "no connection opened"
                    : secs <= 0      ? "nothing was measured"
                    : b->mode == MODE_IDLE ? NULL
                    : count == 0           ? "no reply in the measured window"
                                           : NULL;
  int reached = -1;
  if (b->rate > 0) {
    reached = valid && rate >= 0.95 * b->rate ? 1 : 0;
  }
  bp_limit lim = {secs,
                  cpu,
                  srv,
                  srv_thread,
                  reached,
                  b->mode == MODE_ECHO ? "raise --inflight or --connections"
                                       : "raise --connections"};
  char verdict[320];
  const char *who = "unknown";
  if (valid || b->mode == MODE_IDLE) {
    bp_verdict(&lim, verdict, sizeof(verdict), &who);
  } else {
    snprintf(verdict, sizeof(verdict), "n/a (%s)", why ? why : "no result");
    who = "n/a";
  }

  if (!b->json) {
    printf("herald bench %s %s\n", mode_name(b->mode), b->url);
    printf("  connections   %zu (%" PRIu64 " opened, %" PRIu64
           " failed, %" PRIu64 " lost)",
           b->nconns, b->opened, b->failed, b->lost);
    if (b->nsources) {
      printf(" over %zu source addresses", b->nsources);
    }
    printf("\n");
    if (b->mode == MODE_ECHO) {
      if (b->rate > 0) {
        printf("  messages      %zu B %s, open loop at %.0f/s in all\n",
               b->size, b->binary ? "binary" : "text", b->rate);
      } else {
        printf("  messages      %zu B %s, %u in flight per connection\n",
               b->size, b->binary ? "binary" : "text", b->inflight);
      }
    }
    if (setup_known) {
      printf("  setup         %.3f s\n", setup);
    } else {
      printf("  setup         n/a (not finished)\n");
    }
    printf("  measured      %.3f s\n", secs);
    if (b->mode == MODE_ECHO) {
      if (valid) {
        printf("  throughput    %.0f msgs/s, %.2f MB/s (payload echoed back, "
               "counted once)\n",
               rate, mbs);
        if (b->rate > 0) {
          printf("  sent          %.0f msgs/s of %.0f/s asked%s\n",
                 secs > 0 ? (double)b->sent_window / secs : 0, b->rate,
                 b->behind ? " (the bench fell behind)" : "");
        }
      } else {
        printf("  throughput    n/a (%s)\n", why ? why : "no result");
      }
      print_latency("latency", &b->lat);
    } else if (b->mode == MODE_CONNECT) {
      if (valid) {
        printf("  connects      %.0f /s (%" PRIu64 " opened and closed)\n",
               rate, b->connects);
      } else {
        printf("  connects      n/a (%s)\n", why ? why : "no result");
      }
      print_latency("handshake", &b->lat);
    } else {
      printf("  held          %" PRIu64 " of %zu connections\n",
             b->opened - b->lost, b->nconns);
    }
    printf("  bench CPU     %.2f s (%.0f %% of one core)\n", cpu,
           secs > 0 ? 100 * cpu / secs : 0);
    if (b->server_pid > 0) {
      if (b->srv_ok) {
        printf("  server CPU    %.2f s (%.0f %% of one core", srv,
               secs > 0 ? 100 * srv / secs : 0);
        if (srv_thread >= 0 && secs > 0) {
          printf("; busiest thread %.0f %%", 100 * srv_thread / secs);
        }
        printf(")");
        if (count && b->mode != MODE_IDLE) {
          printf(", %.3f us per %s", srv_us,
                 b->mode == MODE_ECHO ? "message" : "connection");
        }
        printf("\n");
      } else {
        printf("  server CPU    unknown (cannot read /proc/%ld/stat)\n",
               b->server_pid);
      }
    }
    if (b->mode != MODE_IDLE) {
      printf("  limit         %s\n", verdict);
    }
    printf("  errors        %" PRIu64 " (failed %" PRIu64 ", lost %" PRIu64
           ", bad echoes %" PRIu64 ", send errors %" PRIu64 ")\n",
           errors, b->failed, b->lost, b->bad_echo, b->send_errors);
  }
  char setup_s[32];
  snprintf(setup_s, sizeof(setup_s), "%.3f", setup);
  printf("{\"mode\":\"%s\",\"url\":\"%s\",\"connections\":%zu,"
         "\"inflight\":%u,\"size\":%zu,\"binary\":%s,\"sources\":%zu,"
         "\"setup_s\":%s,\"duration_s\":%.3f,\"valid\":%s,",
         mode_name(b->mode), b->url, b->nconns, b->inflight, b->size,
         b->binary ? "true" : "false", b->nsources,
         setup_known ? setup_s : "null", secs, valid ? "true" : "false");
  if (b->rate > 0) {
    printf("\"rate\":%.1f,\"sent_per_s\":%.1f,\"behind\":%" PRIu64 ",", b->rate,
           secs > 0 ? (double)b->sent_window / secs : 0, b->behind);
  }
  if (b->mode == MODE_ECHO) {
    if (valid) {
      printf("\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,",
             b->msgs, rate, mbs);
    } else {
      printf("\"msgs\":%" PRIu64 ",\"msgs_per_s\":null,\"mb_per_s\":null,",
             b->msgs);
    }
  } else if (b->mode == MODE_CONNECT) {
    if (valid) {
      printf("\"connects\":%" PRIu64 ",\"connects_per_s\":%.1f,", b->connects,
             rate);
    } else {
      printf("\"connects\":%" PRIu64 ",\"connects_per_s\":null,", b->connects);
    }
  } else {
    printf("\"held\":%" PRIu64 ",", b->opened - b->lost);
  }
  if (b->mode != MODE_IDLE) {
    char q[7][32];
    const hist *h = &b->lat;
    if (h->total) {
      snprintf(q[6], 32, "%.1f", h->sum / (double)h->total / 1000);
    }
    printf("\"latency_us\":{\"p50\":%s,\"p90\":%s,\"p95\":%s,\"p99\":%s,"
           "\"p999\":%s,\"max\":%s,\"mean\":%s},\"limit\":\"%s\",",
           lat_json(h, 0.50, q[0], 32), lat_json(h, 0.90, q[1], 32),
           lat_json(h, 0.95, q[2], 32), lat_json(h, 0.99, q[3], 32),
           lat_json(h, 0.999, q[4], 32), lat_json(h, -1, q[5], 32),
           h->total ? q[6] : "null", who);
  }
  printf("\"bench_cpu_s\":%.3f,", cpu);
  if (b->srv_ok) {
    printf("\"server_cpu_s\":%.3f,", srv);
    if (srv_thread >= 0) {
      printf("\"server_busiest_thread_cpu_s\":%.3f,", srv_thread);
    }
    if (b->mode == MODE_IDLE) {
      /* nothing is counted per unit while idle */
    } else if (count) {
      printf("\"server_cpu_us_per_%s\":%.4f,",
             b->mode == MODE_ECHO ? "msg" : "connect", srv_us);
    } else {
      printf("\"server_cpu_us_per_%s\":null,",
             b->mode == MODE_ECHO ? "msg" : "connect");
    }
  } else {
    printf("\"server_cpu_s\":null,");
  }
  printf("\"opened\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"lost\":%" PRIu64
         ",\"bad_echoes\":%" PRIu64 ",\"send_errors\":%" PRIu64
         ",\"errors\":%" PRIu64 "}\n",
         b->opened, b->failed, b->lost, b->bad_echo, b->send_errors, errors);
  fflush(stdout);
}
