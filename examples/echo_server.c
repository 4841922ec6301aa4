/* echo_server.c - the runtime API in its smallest useful form: a WebSocket
 * echo server on 127.0.0.1:9001 that also answers plain HTTP on the same
 * port. Stops cleanly on Ctrl-C (every client gets close code 1001).
 *
 *   cc echo_server.c $(pkg-config --cflags --libs herald) -o echo_server */
#include <stdio.h>
#include <string.h>

#include "herald/rt.h"

static void on_open(herald_ws *ws, void *ud) {
  (void)ud;
  printf("open %s\n", herald_ws_peer(ws));
}

static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  (void)ud;
  /* data is only valid during this call; herald_ws_send copies it. */
  herald_ws_send(ws, op, data, len);
}

static void on_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  (void)ws;
  (void)ud;
  printf("close %u%s%s\n", info->code, info->error ? " " : "",
         info->error ? info->error : "");
}

static void on_http(herald_http *h, const herald_request *req,
                    const uint8_t *body, size_t len, void *ud) {
  (void)req;
  (void)body;
  (void)len;
  (void)ud;
  static const char text[] = "connect with a WebSocket client\n";
  herald_header ct = {{"Content-Type", 12}, {"text/plain", 10}};
  herald_http_respond(h, 200, &ct, 1, text, sizeof(text) - 1);
}

int main(void) {
  herald_server_config cfg;
  herald_server_config_init(&cfg);
  const char *listen[] = {"127.0.0.1:9001"};
  cfg.listen = listen;
  cfg.nlisten = 1;
  cfg.on_http = on_http;
  herald_server *srv;
  if (herald_server_new(&srv, &cfg) != 0) {
    return 1;
  }
  herald_ws_callbacks cb = {
      .on_open = on_open, .on_message = on_message, .on_close = on_close};
  herald_server_route(srv, "*", &cb, NULL);
  int rv = herald_server_run(srv); /* until SIGINT or SIGTERM */
  if (rv != 0) {
    fprintf(stderr, "echo_server: %s\n", herald_rt_strerror(rv));
  }
  herald_server_del(srv);
  return rv == 0 ? 0 : 1;
}
