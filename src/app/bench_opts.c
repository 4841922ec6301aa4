/* bench_opts.c - the command line of `herald bench`: every option, its
 * default and its bounds, and the usage text. */
#include "app/bench_int.h"

void bench_usage(FILE *out) {
  fprintf(out,
          "usage: herald bench URL [options]\n"
          "\n"
          "A WebSocket load generator (one event loop, one thread).\n"
          "\n"
          "  --mode echo|connect|idle|fanout  echo: throughput and latency "
          "(default);\n"
          "                       connect: open and close connections as "
          "fast as\n"
          "                       possible; idle: open and hold "
          "connections;\n"
          "                       fanout: subscribers and publishers of a "
          "push server\n"
          "                       (herald bench --mode fanout --help)\n"
          "  --connections N      connections (connect mode: attempts at "
          "once) (1)\n"
          "  --inflight N         echo: messages in flight per connection "
          "(1)\n"
          "  --rate N             echo: open loop, N messages per second in "
          "all,\n"
          "                       sent on the connections in turn whatever "
          "comes\n"
          "                       back; latency counts from when each was "
          "due\n"
          "  --size BYTES         message size, K/M suffixes (32)\n"
          "  --binary             binary messages (default: text, ASCII)\n"
          "  --deflate            offer permessage-deflate (RFC 7692); "
          "messages are\n"
          "                       compressed when the server accepts\n"
          "  --ca FILE            wss://: trust the CA certificates in FILE "
          "(PEM)\n"
          "  --insecure           wss://: do not verify the server's "
          "certificate\n"
          "  --duration S         measured seconds; idle: seconds held (5)\n"
          "  --warmup S           seconds before measuring, not measured "
          "(1)\n"
          "  --source ADDRS       local source addresses to spread "
          "connections over:\n"
          "                       a range 127.0.0.1-127.0.0.8 or a list "
          "a,b,c\n"
          "  --connect-inflight N connects outstanding at once during "
          "setup (256)\n"
          "  --server-pid PID     report the server's CPU time over the "
          "measured\n"
          "                       window (from /proc/PID/stat), and whether "
          "it was\n"
          "                       the limit\n"
          "  --json               print only the JSON result line\n"
          "  --help               this text\n"
          "\n"
          "msgs/s counts messages echoed back; MB/s counts their payload "
          "bytes once\n"
          "(received back, not sent + received), MB = 10^6 bytes. "
          "Latency is from the\n"
          "send call (with --rate: from when the message was due) to the "
          "echo's\n"
          "arrival. An echo that differs from what was sent is an error, "
          "and then no\n"
          "throughput is given. On a terminal a progress line is kept on "
          "stderr.\n"
          "The summary's `limit` line says which side held the run back: "
          "the bench\n"
          "(its one thread busy), the server (its busiest thread busy; needs "
          "--server-pid),\n"
          "or neither (round trips).\n"
          "Exit status: 0 ok, 1 a connection failed or was lost, an echo was "
          "wrong\n"
          "or nothing was measured, 2 usage error.\n");
}

static int parse_seconds(const char *s, double *out) {
  if (s == NULL || *s < '0' || *s > '9') {
    return -1;
  }
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != 0 || v < 0 || v > 86400) {
    return -1;
  }
  *out = v;
  return 0;
}

static int add_source(bench *b, const char *s, size_t len) {
  char buf[INET6_ADDRSTRLEN];
  struct in6_addr a6;
  if (len == 0 || len >= sizeof(buf)) {
    return -1;
  }
  memcpy(buf, s, len);
  buf[len] = 0;
  if (inet_pton(AF_INET, buf, &a6) != 1 && inet_pton(AF_INET6, buf, &a6) != 1) {
    return -1;
  }
  char **n = realloc(b->sources, (b->nsources + 1) * sizeof(char *));
  if (n == NULL) {
    return -1;
  }
  b->sources = n;
  if ((b->sources[b->nsources] = strdup(buf)) == NULL) {
    return -1;
  }
  b->nsources++;
  return 0;
}

/* "A-B" (IPv4, B >= A, at most 65536 addresses) or "a,b,c". */
static int parse_sources(bench *b, const char *s) {
  const char *dash = strchr(s, '-');
  if (dash && strchr(s, ',') == NULL) {
    char lo[INET_ADDRSTRLEN], hi[INET_ADDRSTRLEN];
    size_t l1 = (size_t)(dash - s), l2 = strlen(dash + 1);
    if (l1 == 0 || l1 >= sizeof(lo) || l2 == 0 || l2 >= sizeof(hi)) {
      return -1;
    }
    memcpy(lo, s, l1);
    lo[l1] = 0;
    memcpy(hi, dash + 1, l2 + 1);
    struct in_addr a, z;
    if (inet_pton(AF_INET, lo, &a) != 1 || inet_pton(AF_INET, hi, &z) != 1) {
      return -1;
    }
    uint32_t x = ntohl(a.s_addr), y = ntohl(z.s_addr);
    if (y < x || y - x >= 65536) {
      return -1;
    }
    for (uint64_t v = x; v <= y; v++) {
      struct in_addr cur = {.s_addr = htonl((uint32_t)v)};
      char txt[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &cur, txt, sizeof(txt));
      if (add_source(b, txt, strlen(txt)) != 0) {
        return -1;
      }
    }
    return 0;
  }
  while (*s) {
    const char *comma = strchr(s, ',');
    size_t len = comma ? (size_t)(comma - s) : strlen(s);
    if (add_source(b, s, len) != 0) {
      return -1;
    }
    s += len + (comma ? 1 : 0);
  }
  return b->nsources ? 0 : -1;
}

/* Returns 0, or 2 after printing a usage error. */
int bench_parse_args(bench *b, int argc, char **argv) {
  for (int i = 1; i < argc;) {
    const char *v;
    int r;
    uint64_t n;
    if (strcmp(argv[i], "--binary") == 0) {
      b->binary = 1;
      i++;
      continue;
    }
    if (strcmp(argv[i], "--deflate") == 0) {
      b->deflate = 1;
      i++;
      continue;
    }
    if (strcmp(argv[i], "--insecure") == 0) {
      b->insecure = 1;
      i++;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--ca", &v)) != 0) {
      if (r < 0) {
        return 2;
      }
      b->ca_file = v;
      continue;
    }
    if (strcmp(argv[i], "--json") == 0) {
      b->json = 1;
      i++;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--mode", &v)) != 0) {
      if (r < 0) {
        return 2;
      }
      if (strcmp(v, "echo") == 0) {
        b->mode = MODE_ECHO;
      } else if (strcmp(v, "connect") == 0) {
        b->mode = MODE_CONNECT;
      } else if (strcmp(v, "idle") == 0) {
        b->mode = MODE_IDLE;
      } else {
        fprintf(stderr, "herald bench: --mode takes echo, connect or idle\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--connections", &v)) != 0) {
      if (r < 0 || cli_parse_uint(v, 1000000, &n) != 0 || n == 0) {
        fprintf(stderr, "herald bench: --connections takes 1..1000000\n");
        return 2;
      }
      b->nconns = (size_t)n;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--inflight", &v)) != 0) {
      if (r < 0 || cli_parse_uint(v, 65536, &n) != 0 || n == 0) {
        fprintf(stderr, "herald bench: --inflight takes 1..65536\n");
        return 2;
      }
      b->inflight = (uint32_t)n;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--rate", &v)) != 0) {
      char *end = NULL;
      b->rate = r < 0 ? -1 : strtod(v, &end);
      if (r < 0 || end == v || *end != 0 || !(b->rate > 0) || b->rate > 1e7) {
        fprintf(stderr, "herald bench: --rate takes messages per second, "
                        "above 0 and up to 10000000\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--connect-inflight", &v)) != 0) {
      if (r < 0 || cli_parse_uint(v, 100000, &n) != 0 || n == 0) {
        fprintf(stderr, "herald bench: --connect-inflight takes 1..100000\n");
        return 2;
      }
      b->connect_inflight = (size_t)n;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--size", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &n) != 0 || n > (1u << 30)) {
        fprintf(stderr, "herald bench: --size takes 0..1G (32, 64K)\n");
        return 2;
      }
      b->size = (size_t)n;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--duration", &v)) != 0) {
      if (r < 0 || parse_seconds(v, &b->duration) != 0 || b->duration <= 0) {
        fprintf(stderr, "herald bench: --duration takes seconds > 0\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--warmup", &v)) != 0) {
      if (r < 0 || parse_seconds(v, &b->warmup) != 0) {
        fprintf(stderr, "herald bench: --warmup takes seconds >= 0\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--source", &v)) != 0) {
      if (r < 0 || parse_sources(b, v) != 0) {
        fprintf(stderr, "herald bench: --source takes 127.0.0.1-127.0.0.8 "
                        "or a comma list of addresses\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--server-pid", &v)) != 0) {
      if (r < 0 || cli_parse_uint(v, 1u << 30, &n) != 0 || n == 0) {
        fprintf(stderr, "herald bench: --server-pid takes a process id\n");
        return 2;
      }
      b->server_pid = (long)n;
      continue;
    }
    if (argv[i][0] == '-') {
      fprintf(stderr, "herald bench: unknown option '%s'\n", argv[i]);
      bench_usage(stderr);
      return 2;
    }
    if (b->url) {
      fprintf(stderr, "herald bench: one URL only ('%s')\n", argv[i]);
      return 2;
    }
    b->url = argv[i++];
  }
  if (b->url == NULL) {
    fprintf(stderr, "herald bench: which URL? (ws://127.0.0.1:9001/)\n");
    bench_usage(stderr);
    return 2;
  }
  return 0;
}
