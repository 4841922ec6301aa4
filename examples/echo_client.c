/* echo_client.c - connect, send one message, print the echo, close.
 *
 *   cc echo_client.c $(pkg-config --cflags --libs herald) -o echo_client
 *   ./echo_client ws://127.0.0.1:9001/ "hello" */
#include <stdio.h>
#include <string.h>

#include "herald/rt.h"

static const char *text = "hello";
static int status = 1;

static void on_open(herald_ws *ws, void *ud) {
  (void)ud;
  herald_ws_send(ws, HERALD_OP_TEXT, text, strlen(text));
}

static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  (void)op;
  (void)ud;
  printf("%.*s\n", (int)len, (const char *)data);
  herald_ws_close(ws, HERALD_CLOSE_NORMAL, "bye", 3);
}

static void on_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  (void)ws;
  (void)ud;
  if (info->error) {
    fprintf(stderr, "echo_client: %s\n", info->error);
  }
  status = info->code == HERALD_CLOSE_NORMAL ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: echo_client ws://host:port/path [text]\n");
    return 2;
  }
  if (argc > 2) {
    text = argv[2];
  }
  herald_loop *loop;
  if (herald_loop_new(&loop, NULL) != 0) {
    return 1;
  }
  herald_client_config cfg;
  herald_client_config_init(&cfg);
  cfg.url = argv[1];
  herald_ws_callbacks cb = {
      .on_open = on_open, .on_message = on_message, .on_close = on_close};
  if (herald_connect(loop, &cfg, &cb, NULL, NULL) != 0) {
    fprintf(stderr, "echo_client: bad URL\n");
    herald_loop_del(loop);
    return 2;
  }
  herald_loop_run(loop); /* returns once the connection is gone */
  herald_loop_del(loop);
  return status;
}
