/* main.c - the herald program. Every tool is a subcommand; this file only
 * dispatches. */
#include <stdio.h>
#include <string.h>

#include "app/cli.h"
#include "herald/core.h"

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
               "  --help      print this help and exit\n");
}

int main(int argc, char **argv) {
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
