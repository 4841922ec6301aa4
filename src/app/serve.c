/* serve.c - `herald serve` (and `herald` with no command): the push
 * server. Configuration: defaults, then --config FILE, then the other
 * flags, which this file reads and applies through the setters of
 * push/config.h. */
#include <stdio.h>
#include <string.h>

#include "app/cli.h"
#include "herald/rt.h"
#include "push/log.h"
#include "push/server.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: herald [serve] [options]\n"
          "\n"
          "The Herald push server: channels over WebSocket and SSE, an HTTP\n"
          "API for backends, history with recovery, presence, JWT auth.\n"
          "With no options it listens on 127.0.0.1:8080 in anonymous mode.\n"
          "\n"
          "  --config FILE        JSON configuration (docs/config.md)\n"
          "  --listen ADDR        host:port, [v6]:port or :port (repeatable, "
          "up to 8;\n"
          "                       replaces the configured addresses)\n"
          "  --api-key KEY        key for the HTTP API (Authorization: apikey "
          "KEY)\n"
          "  --anonymous          allow connecting without a token\n"
          "  --no-anonymous       require a JWT to connect\n"
          "  --jwt-hmac SECRET    HS256 secret for tokens\n"
          "  --allow-origin O     allowed Origin (repeatable; * allows any)\n"
          "  --demo               demo namespaces chat and ticker, and the "
          "ticker\n"
          "                       publisher\n"
          "  --tls-cert FILE      serve wss:// and https:// with this chain\n"
          "  --tls-key FILE       and this key\n"
          "  --redis HOST:PORT    scale out over Redis (repeatable: one "
          "shard each)\n"
          "  --node-name NAME     this node's name among the nodes (default "
          "random)\n"
          "  --threads N          loops (threads) serving clients; 0 = one "
          "per core\n"
          "                       (default 0)\n"
          "  --log-level LEVEL    debug, info, warn or error (default info)\n"
          "  --help, -h           this text\n"
          "\n"
          "Signals: SIGINT/SIGTERM disconnect every client with 3001 and exit "
          "0;\n"
          "SIGHUP reloads the TLS certificate.\n"
          "Exit status: 0 after a clean shutdown, 1 when it cannot listen, 2 "
          "for a\n"
          "usage or configuration error.\n");
}

/* Applies the flags (argv[0] is the subcommand) over c, in order, then
 * completes and checks c. Returns 0, 1 when --help was printed, or -1 with
 * a message in err (empty when cli_option() printed it already). */
static int serve_flags(push_config *c, int argc, char **argv, char *err,
                       size_t errlen) {
  int listen_set = 0, redis_set = 0;
  for (int i = 1; i < argc;) {
    const char *v = NULL;
    int r;
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 1;
    }
    if (strcmp(a, "--demo") == 0) {
      c->demo = 1;
      i++;
      continue;
    }
    if (strcmp(a, "--anonymous") == 0 || strcmp(a, "--no-anonymous") == 0) {
      c->anonymous = a[2] == 'a';
      i++;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--config", &v)) != 0) {
      if (r < 0 || push_config_load(c, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--listen", &v)) != 0) {
      if (r < 0) {
        return -1;
      }
      if (!listen_set) { /* the first replaces the configured addresses */
        push_config_clear_listen(c);
        listen_set = 1;
      }
      if (push_config_add_listen(c, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    char **field = NULL;
    if ((r = cli_option(argc, argv, &i, "--api-key", &v)) != 0) {
      field = &c->api_key;
    } else if ((r = cli_option(argc, argv, &i, "--jwt-hmac", &v)) != 0) {
      field = &c->jwt_hmac_secret;
    } else if ((r = cli_option(argc, argv, &i, "--tls-cert", &v)) != 0) {
      field = &c->tls_cert;
    } else if ((r = cli_option(argc, argv, &i, "--tls-key", &v)) != 0) {
      field = &c->tls_key;
    }
    if (field) {
      if (r < 0 || push_config_set_string(field, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--redis", &v)) != 0) {
      if (r < 0) {
        return -1;
      }
      if (!redis_set) { /* the first replaces the configured shards */
        push_config_clear_redis(c);
        redis_set = 1;
      }
      if (push_config_add_redis(c, v, err, errlen) != 0) {
        return -1;
      }
      c->engine_redis = 1;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--threads", &v)) != 0) {
      if (r < 0 || push_config_set_threads(c, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--node-name", &v)) != 0) {
      if (r < 0 || push_config_set_node_name(c, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--allow-origin", &v)) != 0) {
      if (r < 0 || push_config_add_origin(c, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--log-level", &v)) != 0) {
      if (r < 0 || push_config_set_log_level(c, v, err, errlen) != 0) {
        return -1;
      }
      continue;
    }
    snprintf(err, errlen, "unknown option '%s' (see --help)", a);
    return -1;
  }
  return push_config_finish(c, err, errlen);
}

int herald_cmd_serve(int argc, char **argv) {
  push_config cfg;
  char err[512] = "";
  if (push_config_defaults(&cfg) != 0) {
    fprintf(stderr, "herald: out of memory\n");
    return 1;
  }
  int rv = serve_flags(&cfg, argc, argv, err, sizeof(err));
  if (rv != 0) {
    if (rv < 0) {
      fprintf(stderr, "herald serve: %s\n", err[0] ? err : "bad arguments");
    }
    push_config_free(&cfg);
    return rv < 0 ? 2 : 0;
  }
  /* Which I/O backend the loops run (--io-backend, HERALD_IO_BACKEND), as a
   * log line at the configured level. */
  push_log_level = cfg.log_level;
  push_log(
      PUSH_LOG_INFO, "ev=io_backend backend=%s",
      herald_io_backend_name(herald_io_backend_resolve(HERALD_IO_DEFAULT)));
  rv = push_server_main(&cfg);
  push_config_free(&cfg);
  return rv;
}
