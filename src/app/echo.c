/* echo.c - `herald echo`: an echo server for conformance tests and
 * benchmarks. Every text and binary message goes back unchanged. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cli.h"
#include "herald/rt.h"

static void echo_usage(FILE *out) {
  fprintf(out,
          "usage: herald echo [options]\n"
          "\n"
          "An echo server: every text and binary message is sent back.\n"
          "\n"
          "  --listen ADDR        address to listen on, host:port or "
          "[v6]:port;\n"
          "                       repeat for several (default "
          "127.0.0.1:9001)\n"
          "  --threads N          event loops (threads); 0 = one per core "
          "(default 1)\n"
          "  --max-message SIZE   largest message accepted (default 64M)\n"
          "  --max-partial SIZE   bytes all connections may hold together "
          "for messages\n"
          "                       still arriving; the connection that would "
          "go past it\n"
          "                       is closed with 1013 (default 256M, 0: no "
          "limit)\n"
          "  --max-deflate SIZE   bytes of compression state all "
          "connections may hold\n"
          "                       together (about 300K-550K each); past it "
          "an offer of\n"
          "                       permessage-deflate is declined (default 1G, "
          "0: no limit)\n"
          "  --idle-timeout SECS  close a connection that sent nothing for "
          "SECS seconds,\n"
          "                       with 1001 (default 60, 0: never)\n"
          "  --no-deflate         do not accept permessage-deflate (RFC "
          "7692); by default\n"
          "                       a client's offer is accepted\n"
          "  --tls-cert FILE      serve wss:// with this PEM certificate "
          "chain (leaf first);\n"
          "                       repeat with --tls-key for more names "
          "(chosen by SNI)\n"
          "  --tls-key FILE       the PEM private key of the last "
          "--tls-cert\n"
          "  --help               this text\n"
          "\n"
          "Prints \"listening on HOST:PORT\" once it accepts connections; port "
          "0 picks a\nfree port. SIGINT or SIGTERM closes every connection "
          "with 1001 and exits 0; SIGHUP reloads the TLS certificates.\n"
          "Exit codes: 0 after a clean shutdown, 1 if it cannot listen or "
          "load the\ncertificates, 2 on a usage error.\n");
}

static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  (void)ud;
  herald_ws_send(ws, op, data, len);
}

static const char *first_listen;

static void on_start(herald_loop *loop, void *ud) {
  static atomic_int printed;
  (void)loop;
  herald_server *srv = ud;
  if (atomic_exchange(&printed, 1)) {
    return; /* once, not once per worker */
  }
  /* Print the address with the port actually bound. */
  const char *spec = first_listen;
  const char *colon = strrchr(spec, ':');
  int hostlen = (int)(colon - spec);
  printf("listening on %.*s:%d\n", hostlen, spec, herald_server_port(srv));
  fflush(stdout);
}

int herald_cmd_echo(int argc, char **argv) {
  herald_server_config cfg;
  herald_server_config_init(&cfg);
  const char *listen[16];
  size_t nlisten = 0;
  uint64_t max_message = 64u << 20;
  uint64_t max_partial = cfg.max_partial_bytes;
  uint64_t max_deflate = cfg.max_deflate_bytes;
  uint64_t idle_secs = 60;
  int deflate = 1;
  herald_tls_cert certs[8];
  size_t ncert = 0, nkey = 0;
  for (int i = 1; i < argc;) {
    const char *v;
    int r;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      echo_usage(stdout);
      return 0;
    }
    if (strcmp(argv[i], "--no-deflate") == 0) {
      deflate = 0;
      i++;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--listen", &v)) != 0) {
      if (r < 0) {
        return 2;
      }
      if (nlisten == sizeof(listen) / sizeof(listen[0])) {
        fprintf(stderr, "herald echo: too many --listen\n");
        return 2;
      }
      listen[nlisten++] = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--tls-cert", &v)) != 0) {
      if (r < 0) {
        return 2;
      }
      if (ncert != nkey || ncert == sizeof(certs) / sizeof(certs[0])) {
        fprintf(stderr, "herald echo: each --tls-cert needs its --tls-key "
                        "(at most 8 pairs)\n");
        return 2;
      }
      certs[ncert++].cert_file = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--tls-key", &v)) != 0) {
      if (r < 0) {
        return 2;
      }
      if (nkey + 1 != ncert) {
        fprintf(stderr, "herald echo: --tls-key must follow its --tls-cert\n");
        return 2;
      }
      certs[nkey++].key_file = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--threads", &v)) != 0) {
      uint64_t n;
      if (r < 0 || cli_parse_uint(v, 256, &n) != 0) {
        fprintf(stderr, "herald echo: --threads takes 0..256\n");
        return 2;
      }
      cfg.threads = (int)n;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--max-message", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &max_message) != 0 || max_message == 0) {
        fprintf(stderr, "herald echo: --max-message takes a size (64M)\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--max-partial", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &max_partial) != 0) {
        fprintf(stderr, "herald echo: --max-partial takes a size (256M), or "
                        "0 for no limit\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--max-deflate", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &max_deflate) != 0) {
        fprintf(stderr, "herald echo: --max-deflate takes a size (1G), or 0 "
                        "for no limit\n");
        return 2;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--idle-timeout", &v)) != 0) {
      if (r < 0 || cli_parse_uint(v, 86400, &idle_secs) != 0) {
        fprintf(stderr, "herald echo: --idle-timeout takes seconds, 0..86400 "
                        "(0: never)\n");
        return 2;
      }
      continue;
    }
    fprintf(stderr, "herald echo: unknown option '%s'\n", argv[i]);
    echo_usage(stderr);
    return 2;
  }
  if (ncert != nkey) {
    fprintf(stderr, "herald echo: --tls-cert %s has no --tls-key\n",
            certs[ncert - 1].cert_file);
    return 2;
  }
  cfg.tls.certs = certs;
  cfg.tls.ncerts = ncert;
  const char *why;
  if (ncert > 0 && herald_tls_check(&cfg.tls, &why) != 0) {
    fprintf(stderr, "herald echo: TLS: %s\n", why);
    return 1;
  }
  if (nlisten == 0) {
    listen[nlisten++] = "127.0.0.1:9001";
  }
  first_listen = listen[0];
  cfg.listen = listen;
  cfg.nlisten = nlisten;
  cfg.core.max_message_size = max_message;
  cfg.core.max_frame_size = max_message;
  /* Autobahn-style fragmentation cases split 16 MiB into 64-byte frames. */
  cfg.core.max_fragments = 1u << 20;
  cfg.core.deflate.enabled = deflate;
  /* A large echoed message may sit in the send buffer whole. */
  cfg.limits.send_hard_cap = 2 * max_message + (1u << 20);
  cfg.limits.send_high_water = max_message;
  /* Unfinished messages (a compressed one can inflate to max_message from
   * a few KB) are bounded together; silent connections do not stay. */
  cfg.max_partial_bytes = max_partial;
  cfg.max_deflate_bytes = max_deflate;
  cfg.limits.idle_timeout_ms = (uint32_t)(idle_secs * 1000);
  herald_server *srv;
  int rv = herald_server_new(&srv, &cfg);
  if (rv != 0) {
    fprintf(stderr, "herald echo: %s\n", herald_rt_strerror(rv));
    return 2;
  }
  herald_ws_callbacks cb = {.on_message = on_message};
  herald_server_route(srv, "*", &cb, NULL);
  herald_server_on_loop_start(srv, on_start, srv);
  rv = herald_server_run(srv);
  herald_server_del(srv);
  if (rv != 0) {
    fprintf(stderr, "herald echo: cannot listen: %s\n", herald_rt_strerror(rv));
    return 1;
  }
  return 0;
}
