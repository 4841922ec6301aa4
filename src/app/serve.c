/* serve.c - `herald serve` (and `herald` with no command): the push
 * server. Configuration: defaults, then --config FILE, then flags. */
#include <stdio.h>

#include "app/cli.h"
#include "push/server.h"

int herald_cmd_serve(int argc, char **argv) {
  push_config cfg;
  char err[512] = "";
  if (push_config_defaults(&cfg) != 0) {
    fprintf(stderr, "herald: out of memory\n");
    return 1;
  }
  int rv = push_config_flags(&cfg, argc, argv, err, sizeof(err));
  if (rv != 0) {
    if (rv < 0) {
      fprintf(stderr, "herald serve: %s\n", err[0] ? err : "bad arguments");
    }
    push_config_free(&cfg);
    return rv < 0 ? 2 : 0;
  }
  rv = push_server_main(&cfg);
  push_config_free(&cfg);
  return rv;
}
