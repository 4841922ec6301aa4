/* demo.c - the demo publisher of `herald serve --demo`: a made-up price for
 * five symbols on ticker:prices twice a second, through the engine like
 * any publication. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "push/server_int.h"

static void on_published(void *ud, const push_engine_reply *rep) {
  push_op *op = ud;
  push_publish_done(op, rep);
  push_op_free(op);
}

static void on_demo(uv_timer_t *t) {
  push_server *ps = t->data;
  static const char *const sym[5] = {"HRLD", "WSKT", "UVLP", "ZLIB", "TLS3"};
  for (int i = 0; i < 5; i++) {
    uint32_t r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r)) {
      r = (uint32_t)rand();
    }
    double step = ((double)(r % 2001) - 1000.0) / 1000.0 * 0.006;
    double old = ps->demo_price[i];
    double price = old * (1.0 + step);
    ps->demo_price[i] = price;
    char json[160];
    int n = snprintf(json, sizeof(json),
                     "{\"symbol\":\"%s\",\"price\":%.2f,\"change\":%.2f}",
                     sym[i], price, price - old);
    push_publication p = {{json, (size_t)n}, {NULL, 0}, NULL, NULL, NULL};
    push_pos pos;
    push_op *op = push_op_new(ps, NULL, NULL, 0, NULL);
    if (op != NULL && push_publish(ps, "ticker:prices", &p, &pos, op,
                                   on_published) != PUSH_ENGINE_PENDING) {
      push_op_free(op);
    }
  }
}

void push_demo_start(push_server *ps, uv_loop_t *uv) {
  static const double start[5] = {123.45, 87.10, 42.00, 12.34, 256.00};
  memcpy(ps->demo_price, start, sizeof(start));
  uv_timer_init(uv, &ps->demo);
  ps->demo.data = ps;
  uv_timer_start(&ps->demo, on_demo, 500, 500);
  uv_unref((uv_handle_t *)&ps->demo);
}
