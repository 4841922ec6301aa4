/* metrics.c - GET /metrics: the server's counters and gauges, the delivery
 * latency histogram, and the engine's own metrics, in Prometheus' text
 * format. */
#include <inttypes.h>
#include <stdio.h>

#include "push/metrics.h"
#include "push/server_int.h"

static const double lat_bounds[PUSH_LAT_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005,   0.01,   0.025,   0.05,   0.1,   0.5};

int push_metrics_write(push_buf *out, const push_metric *m, size_t n) {
  char line[512];
  for (size_t i = 0; i < n; i++) {
    int k = snprintf(line, sizeof(line),
                     "# HELP %s %s\n# TYPE %s %s\n%s %.0f\n", m[i].name,
                     m[i].help, m[i].name, m[i].type, m[i].name, m[i].value);
    if (k < 0 || (size_t)k >= sizeof(line) ||
        push_buf_raw(out, line, (size_t)k) != 0) {
      return -1;
    }
  }
  return 0;
}

/* From the publication's making to its queueing on a connection, which
 * happens in the pass's flush: one clock read serves the whole flush. */
void push_record_latency(push_server *ps, const push_pub *pub) {
  uint64_t now = ps->flush_us ? ps->flush_us : push_mono_us();
  double s = now > pub->born_us ? (double)(now - pub->born_us) / 1e6 : 0;
  int b = 0;
  while (b < PUSH_LAT_BUCKETS && s > lat_bounds[b]) {
    b++;
  }
  ps->lat_bucket[b]++;
  ps->lat_count++;
  ps->lat_sum += s;
}

static void write_latency(const push_server *ps, push_buf *b) {
  char line[256];
  static const char hist[] =
      "# HELP herald_delivery_latency_seconds Time from a publish to the "
      "publication being queued for each subscriber.\n"
      "# TYPE herald_delivery_latency_seconds histogram\n";
  push_buf_raw(b, hist, sizeof(hist) - 1);
  uint64_t cum = 0;
  for (int i = 0; i <= PUSH_LAT_BUCKETS; i++) {
    cum += ps->lat_bucket[i];
    int n =
        i < PUSH_LAT_BUCKETS
            ? snprintf(line, sizeof(line),
                       "herald_delivery_latency_seconds_bucket{le=\"%g\"} "
                       "%" PRIu64 "\n",
                       lat_bounds[i], cum)
            : snprintf(line, sizeof(line),
                       "herald_delivery_latency_seconds_bucket{le=\"+Inf\"} "
                       "%" PRIu64 "\n",
                       cum);
    push_buf_raw(b, line, (size_t)n);
  }
  int n = snprintf(line, sizeof(line),
                   "herald_delivery_latency_seconds_sum %.6f\n"
                   "herald_delivery_latency_seconds_count %" PRIu64 "\n",
                   ps->lat_sum, ps->lat_count);
  push_buf_raw(b, line, (size_t)n);
}

/* With several loops, view holds every loop's counters summed (node.c). */
static void metrics_answer(push_server *real, const push_server *view,
                           herald_http *h) {
  const push_server *ps = view;
  (void)real;
  push_buf b = {0};
  const char *why;
  const push_metric m[] = {
      {"herald_connections", "gauge", "Open WebSocket and SSE clients.",
       (double)ps->fig.nclients},
      {"herald_subscriptions", "gauge", "Channel subscriptions.",
       (double)ps->fig.subscriptions},
      {"herald_channels", "gauge", "Channels with subscribers or history.",
       (double)ps->fig.channels},
      {"herald_connects_total", "counter", "Successful connect commands.",
       (double)ps->connects_total},
      {"herald_auth_failures_total", "counter", "Refused tokens.",
       (double)ps->auth_failures},
      {"herald_messages_in_total", "counter", "WebSocket messages received.",
       (double)ps->messages_in},
      {"herald_messages_out_total", "counter", "Messages sent to clients.",
       (double)ps->messages_out},
      {"herald_bytes_in_total", "counter", "Bytes of messages received.",
       (double)ps->bytes_in},
      {"herald_bytes_out_total", "counter", "Bytes of messages sent.",
       (double)ps->bytes_out},
      {"herald_publications_total", "counter", "Publications.",
       (double)ps->publications},
      {"herald_drops_total", "counter",
       "Messages not queued because a client was over its output cap.",
       (double)ps->drops},
      {"herald_slow_consumer_disconnects_total", "counter",
       "Clients cut off for being too slow.", (double)ps->slow_disconnects},
      {"herald_partial_message_bytes", "gauge",
       "Bytes all clients hold for messages still arriving "
       "(max_partial_bytes of the runtime).",
       (double)herald_budget_used(herald_server_budget(ps->srv))},
      {"herald_partial_message_refusals_total", "counter",
       "Clients closed with 1013 over the budget for partial messages.",
       (double)herald_budget_refused(herald_server_budget(ps->srv))},
      {"herald_engine_healthy", "gauge",
       "1 when the engine can serve every channel (Redis: every shard is "
       "connected and ready).",
       (double)push_engine_healthy(ps->engine, &why)},
      {"herald_history_bytes", "gauge",
       "Bytes of history this node keeps in memory (max_history_bytes).",
       (double)ps->fig.history_bytes},
      {"herald_history_evictions_total", "counter",
       "History entries dropped, oldest first, to stay under "
       "max_history_bytes.",
       (double)ps->fig.history_evictions},
      {"herald_rate_limited_commands_total", "counter",
       "Commands refused with 110: over rate_limits.commands.",
       (double)ps->limited_commands},
      {"herald_rate_limited_publishes_total", "counter",
       "Publishes refused with 110: over rate_limits.publishes.",
       (double)ps->limited_publishes},
      {"herald_rate_limited_subscribes_total", "counter",
       "Subscribes and unsubscribes refused with 110: over "
       "rate_limits.subscribes.",
       (double)ps->limited_subscribes},
      {"herald_rate_limited_connections_total", "counter",
       "WebSocket upgrades refused (429): over "
       "rate_limits.connections_per_ip.",
       (double)ps->limited_connections},
      {"herald_rate_limit_addresses", "gauge",
       "Client addresses whose connection rate is being tracked.",
       (double)push_server_ips(real)},
      {"herald_channel_limit_refusals_total", "counter",
       "Subscribes and publishes refused: max_channels_total reached.",
       (double)ps->channel_limit_refusals},
      {"herald_tokens_expired_total", "counter",
       "Connections closed with 3006 when their token expired.",
       (double)ps->tokens_expired},
      {"herald_engine_unavailable_total", "counter",
       "Requests refused because the engine was unavailable.",
       (double)ps->engine_unavailable},
      {"herald_refresh_pushes_total", "counter",
       "refresh and sub_refresh pushes sent ahead of an exp.",
       (double)ps->refresh_pushes},
      {"herald_refreshes_total", "counter",
       "Credentials extended (refresh, sub_refresh, the refresh proxy).",
       (double)ps->refreshes},
      {"herald_subscriptions_expired_total", "counter",
       "Subscriptions ended because their token expired.",
       (double)ps->sub_expired},
      {"herald_user_connection_limit_refusals_total", "counter",
       "Connects refused (3508): the user had user_connection_limit "
       "connections.",
       (double)ps->user_limit_refusals},
      {"herald_idempotent_duplicates_total", "counter",
       "Publishes answered with an earlier result (idempotency_key).",
       (double)ps->idempotent_hits},
      {"herald_idempotency_evictions_total", "counter",
       "Idempotency keys forgotten before their window ended to stay under "
       "idempotency_max_keys (memory engine).",
       (double)ps->fig.idem_evicted},
      {"herald_io_recv_pool_bytes", "gauge",
       "io_uring: bytes of the loops' receive pools (64 KiB each at first, "
       "doubling while receives find no buffer, 1 MiB at most); 0 on epoll.",
       (double)ps->fig.io.recv_pool_bytes},
      {"herald_io_recv_pool_waits_total", "counter",
       "io_uring: receives that found no pool buffer free.",
       (double)ps->fig.io.recv_pool_waits},
      {"herald_io_recv_placed_total", "counter",
       "io_uring: receives made straight into a large frame's message "
       "buffer instead of the pool.",
       (double)ps->fig.io.recv_placed},
  };
  push_metrics_write(&b, m, sizeof(m) / sizeof(m[0]));
  write_latency(ps, &b);
  push_pusher_metrics(real, &b);
  push_proxy_metrics((push_server *)view, &b);
  push_engine_metrics(ps->engine, &ps->fig.engine, &b);
  herald_header ct = {{"Content-Type", 12}, {"text/plain; version=0.0.4", 25}};
  herald_http_respond(h, 200, &ct, 1, b.p, b.len);
  push_buf_free(&b);
}

void push_metrics(push_server *ps, herald_http *h) {
  push_node_answer(ps, h, metrics_answer);
}

void push_node_json(void *ud, push_buf *b) {
  push_server *real = ud;
  const push_server *ps = real->view ? real->view : real;
  push_figures fig;
  if (real->view == NULL) {
    /* The heartbeat of a node on several loops: this loop's figures now,
     * the others' as of their last tick. */
    push_node_figures(real);
    fig = real->fig;
    push_server_add_others(real, &fig);
  } else {
    fig = ps->fig;
  }
  char tmp[320];
  int n = snprintf(tmp, sizeof(tmp),
                   "{\"name\":\"%s\",\"version\":\"%s\","
                   "\"connections\":%zu,\"subscriptions\":%zu,"
                   "\"channels\":%zu,\"uptime\":%" PRId64 "}",
                   ps->node, HERALD_VERSION_STRING, (size_t)fig.nclients,
                   (size_t)fig.subscriptions, (size_t)fig.channels,
                   (push_now_ms() - ps->started_ms) / 1000);
  /* The engine's state and the Pusher apps' counts go in before the
   * closing brace. */
  push_buf_raw(b, tmp, (size_t)n - 1);
  push_engine_describe(ps->engine, b);
  push_pusher_node_json(real, b);
  push_buf_raw(b, "}", 1);
}
