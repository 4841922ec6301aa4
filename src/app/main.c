/* main.c - the herald program. Every tool is a subcommand; this file only
 * dispatches. */
#include <stdio.h>
#include <string.h>

#include "app/cli.h"
#include "herald/core.h"
#include "herald/rt.h"

#ifndef HERALD_VERSION_STRING
#define HERALD_VERSION_STRING "0.0.0"
#endif

static void usage(FILE *out) {
  fprintf(out, "usage: herald [--version] [--help] [<command>] [options]\n"
               "\n"
               "Herald is a WebSocket library and real-time push server.\n"
               "Without a command (or with options only) it runs `serve`.\n"
               "\n"
               "commands:\n"
               "  serve       the push server (default; see herald serve "
               "--help)\n"
               "  echo        an echo server (conformance, benchmarks)\n"
               "  client      an interactive client (stdin/stdout)\n"
               "  bench       a load generator (echo, connect, idle)\n"
               "  token       mint an HS256 token for local use and tests\n"
               "\n"
               "options:\n"
               "  --version   print the version and exit\n"
               "  --help      print this help and exit\n"
               "  --io-backend epoll|io_uring|auto\n"
               "              how every command's loops do socket I/O "
               "(default: auto,\n"
               "              or $HERALD_IO_BACKEND); auto is epoll for "
               "now (io_uring is\n"
               "              opt-in, Linux 6.0+); servers log which one "
               "runs\n");
}

/* Takes `--io-backend NAME` (or `=NAME`) out of argv, wherever it is, and
 * makes it the process default of every loop. Returns 0, or -1 after
 * printing an error. */
static int take_io_backend(int *argc, char **argv) {
  for (int i = 1; i < *argc; i++) {
    const char *v = NULL;
    int at = i;
    int r = cli_option(*argc, argv, &i, "--io-backend", &v);
    if (r < 0) {
      return -1;
    }
    if (r == 0) {
      continue;
    }
    herald_io_backend b;
    if (herald_io_backend_parse(v, &b) != 0) {
      fprintf(stderr, "herald: --io-backend takes epoll, io_uring or auto\n");
      return -1;
    }
    herald_io_backend_set_default(b);
    int used = i - at; /* 1 for --io-backend=NAME, 2 for --io-backend NAME */
    for (int j = at; j + used <= *argc; j++) {
      argv[j] = argv[j + used];
    }
    *argc -= used;
    i = at - 1;
  }
  return 0;
}

/* The echo server says which backend its loops run (stderr; herald serve
 * logs it in its own format, serve.c). */
static void log_io_backend(const char *cmd) {
  herald_io_backend b = herald_io_backend_resolve(HERALD_IO_DEFAULT);
  fprintf(stderr, "herald %s: io backend %s\n", cmd, herald_io_backend_name(b));
}

int main(int argc, char **argv) {
  if (take_io_backend(&argc, argv) != 0) {
    return 2;
  }
  if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
    printf("herald %s\n", HERALD_VERSION_STRING);
    return 0;
  }
  if (argc >= 2 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    /* `herald` and `herald --listen ...` run the push server. */
    return herald_cmd_serve(argc, argv);
  }
  if (strcmp(argv[1], "serve") == 0) {
    return herald_cmd_serve(argc - 1, argv + 1);
  }
  if (argc >= 2 && strcmp(argv[1], "echo") == 0) {
    log_io_backend("echo");
    return herald_cmd_echo(argc - 1, argv + 1);
  }
  if (argc >= 2 && strcmp(argv[1], "client") == 0) {
    return herald_cmd_client(argc - 1, argv + 1);
  }
  if (argc >= 2 && strcmp(argv[1], "bench") == 0) {
    return herald_cmd_bench(argc - 1, argv + 1);
  }
  if (strcmp(argv[1], "token") == 0) {
    return herald_cmd_token(argc - 1, argv + 1);
  }
  if (argc >= 2) {
    fprintf(stderr, "herald: unknown command '%s'\n", argv[1]);
  }
  usage(stderr);
  return 2;
}
