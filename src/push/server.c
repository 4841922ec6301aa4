/*
 * server.c - `herald serve`'s lifecycle: it binds the push modules to the
 * runtime, starts the engine and the timers on the loop, shuts down on a
 * signal, and runs until then. What the server does for its clients lives
 * in the files server_int.h lists.
 *
 * A subscriber whose send buffer passes client_output_cap is cut off with
 * 3004 (reconnect and recover): it never slows the others, and it loses
 * nothing it cannot get back from history.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "push/server.h"
#include "push/server_int.h"

/* One push_server per loop (thread): g_workers[i] serves the clients of
 * loop i. They share the configuration, the node's name and keys, and the
 * table of connection rates per client IP (under g_ips_mu: one lock per
 * new connection, never on the message path). */
static push_server *g_workers;
static int g_nworkers;
static push_threads *g_threads; /* NULL with one loop */
static atomic_int g_started;    /* loops that ran on_loop_start */
static atomic_int g_serving;    /* loops not yet shut down */
static pthread_mutex_t g_ips_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local push_server *tl_server;
/* Channels each loop owns, as of its last pass (max_channels_total is the
 * node's): written by that loop only, read by the others. */
static _Atomic uint64_t *g_held;
/* Each loop's connections, subscriptions and channels as of its last tick
 * (written by that loop only): the node list's entry of a node on several
 * loops sums them (push_node_json). */
typedef struct loop_figures {
  _Atomic uint64_t nclients, subscriptions, channels;
} loop_figures;
static loop_figures *g_figs;

void push_server_add_others(const push_server *ps, push_figures *f) {
  for (int i = 0; g_figs != NULL && i < g_nworkers; i++) {
    if (i != ps->thread) {
      loop_figures *g = &g_figs[i];
      f->nclients += atomic_load_explicit(&g->nclients, memory_order_relaxed);
      f->subscriptions +=
          atomic_load_explicit(&g->subscriptions, memory_order_relaxed);
      f->channels += atomic_load_explicit(&g->channels, memory_order_relaxed);
    }
  }
}

static void publish_figures(push_server *ps) {
  if (g_figs == NULL) {
    return;
  }
  push_node_figures(ps);
  loop_figures *g = &g_figs[ps->thread];
  atomic_store_explicit(&g->nclients, ps->fig.nclients, memory_order_relaxed);
  atomic_store_explicit(&g->subscriptions, ps->fig.subscriptions,
                        memory_order_relaxed);
  atomic_store_explicit(&g->channels, ps->fig.channels, memory_order_relaxed);
}

uint64_t push_server_held_elsewhere(const push_server *ps) {
  uint64_t n = 0;
  for (int i = 0; g_held != NULL && i < g_nworkers; i++) {
    if (i != ps->thread) {
      n += atomic_load_explicit(&g_held[i], memory_order_relaxed);
    }
  }
  return n;
}

/* This loop's channels less the replicas of other loops' channels. */
uint64_t push_server_held(const push_server *ps) {
  uint64_t n = push_hub_nchannels(ps->hub);
  uint64_t r = ps->engine ? ps->engine->replicas : 0;
  return n > r ? n - r : 0;
}

int push_server_all(push_server **all) {
  *all = g_workers;
  return g_nworkers;
}

push_server *push_server_here(void) {
  return tl_server;
}

int push_server_ip_take(push_server *ps, const char *ip) {
  pthread_mutex_lock(&g_ips_mu);
  int rv = push_ip_take(ps->ips, ip, &ps->cfg->rate_connections,
                        (int64_t)(push_mono_us() / 1000));
  pthread_mutex_unlock(&g_ips_mu);
  return rv;
}

size_t push_server_ips(push_server *ps) {
  pthread_mutex_lock(&g_ips_mu);
  size_t n = push_ip_table_size(ps->ips);
  pthread_mutex_unlock(&g_ips_mu);
  return n;
}

/* ---- timers: hub and engine upkeep, presence, SSE keepalive ----------- */

/* Presence entries that expire (the Redis engine's) live only while their
 * node refreshes them: a node that dies takes its clients' entries with it
 * after presence_ttl. */
static void presence_refresh(push_server *ps) {
  for (push_client *c = ps->clients; c; c = c->next) {
    if (c->gone) {
      continue;
    }
    push_member m = push_client_member(c);
    if (c->counted) {
      push_engine_user_refresh(ps->engine, c->user, c->id);
    }
    for (size_t i = 0; i < c->nsubs; i++) {
      const push_ns *ns = push_hub_ns(ps->hub, c->subs[i]);
      if (ns && ns->presence) {
        push_engine_presence_add(ps->engine, c->subs[i], &m, 0);
      }
    }
  }
}

static void on_tick(uv_timer_t *t) {
  push_server *ps = t->data;
  int64_t now = push_now_ms();
  push_hub_tick(ps->hub, now);
  publish_figures(ps); /* before the engine's heartbeat reads them */
  push_engine_tick(ps->engine, now);
  push_credentials_tick(ps, now);
  if (ps->thread == 0) {
    pthread_mutex_lock(&g_ips_mu);
    push_ip_table_sweep(ps->ips, &ps->cfg->rate_connections,
                        (int64_t)(push_mono_us() / 1000));
    pthread_mutex_unlock(&g_ips_mu);
  }
  uint32_t every = ps->engine->presence_refresh_ms;
  if (every && now - ps->presence_refresh_ms >= (int64_t)every) {
    ps->presence_refresh_ms = now;
    presence_refresh(ps);
  }
  push_pusher_tick(ps, now);
  if (ps->cfg->sse_keepalive_s && ++ps->ticks % ps->cfg->sse_keepalive_s == 0) {
    push_sse_keepalive(ps);
  }
}

/* Before the runtime writes: the publications of this pass go to their
 * subscribers' queues, each subscriber's in a row. */
static void on_pass_end(herald_loop *loop, void *ud) {
  (void)loop;
  push_server *ps = ud;
  ps->flush_us = push_mono_us();
  push_hub_flush(ps->hub);
  ps->flush_us = 0;
  /* With several loops: what this pass sends the others (publications
   * for their replicas, calls to owners) leaves now, in one hand-over. */
  push_engine_pass(ps->engine);
  if (g_held != NULL) {
    atomic_store_explicit(&g_held[ps->thread], push_server_held(ps),
                          memory_order_relaxed);
  }
}

static void lost_one(void *cl, void *ud) {
  (void)ud;
  push_client_disconnect(cl, PUSH_D_INSUFFICIENT, "insufficient state");
}

/* The engine no longer holds publications this node's subscribers of
 * channel missed (a long outage, or Redis lost its data): rather than leave
 * a silent gap, they are disconnected to reconnect and resubscribe, which
 * tells them "recovered": false. */
static void on_lost(void *ud, const char *channel) {
  push_server *ps = ud;
  if (push_pusher_channel(channel)) {
    /* Pusher promises no recovery: its sockets simply go on. */
    push_log(PUSH_LOG_WARN, "ev=insufficient_state channel=%s pusher=1",
             channel);
    return;
  }
  push_log(PUSH_LOG_WARN, "ev=insufficient_state channel=%s subscribers=%zu",
           channel, push_hub_nsubscribers(ps->hub, channel));
  push_hub_each_subscriber(ps->hub, channel, lost_one, ps);
}

/* The engine of this loop: the configured one, or with several loops a
 * threads engine over a memory engine of this loop's hub. Every loop then
 * waits for the others, so that messages may go to any of them. */
static push_engine *start_engine(push_server *ps, uv_loop_t *uv, char *err,
                                 size_t errlen) {
  push_engine_events ev = {on_lost, push_node_json, ps, push_on_occupancy,
                           push_on_control};
  if (g_threads == NULL) {
    return push_engine_new(ps->cfg, uv, ps->hub, ps->node, &ev, err, errlen);
  }
  /* Each loop's inner engine (with Redis: its own connections) tells the
   * threads engine first; only the first loop keeps the node's entry. */
  push_engine_events inner_ev = ev;
  push_engine_threads_events(g_threads, ps->thread, &inner_ev);
  push_config *cfg = malloc(sizeof(*cfg));
  push_engine *e = NULL;
  if (cfg == NULL) {
    snprintf(err, errlen, "out of memory");
  } else {
    *cfg = *ps->cfg;
    cfg->redis.secondary = ps->thread != 0;
    e = push_engine_new(cfg, uv, ps->hub, ps->node, &inner_ev, err, errlen);
    free(cfg); /* the Redis engine copies what it keeps */
  }
  push_engine *te =
      e ? push_engine_threads_new(g_threads, ps->thread, ps->loop, e, &ev)
        : NULL;
  if (e != NULL && te == NULL) {
    push_engine_del(e);
    snprintf(err, errlen, "out of memory");
  }
  push_threads_wait(g_threads);
  return te;
}

static void on_loop_start(herald_loop *loop, void *ud) {
  push_server *ps = ud;
  uv_loop_t *uv = herald_loop_uv(loop);
  char err[256] = "";
  ps->engine = start_engine(ps, uv, err, sizeof(err));
  if (ps->engine == NULL) {
    fprintf(stderr, "herald: %s\n", err);
    ps->exit_code = 2;
    ps->stopping = 1;
    herald_server_stop(ps->srv);
    return;
  }
  if (push_backend_start(ps, uv, err, sizeof(err)) != 0) {
    fprintf(stderr, "herald: %s\n", err);
    ps->exit_code = 2;
    ps->stopping = 1;
    herald_server_stop(ps->srv);
    return;
  }
  if (push_pusher_start(ps) != 0) {
    fprintf(stderr, "herald: out of memory\n");
    ps->exit_code = 1;
    ps->stopping = 1;
    herald_server_stop(ps->srv);
    return;
  }
  uv_timer_init(uv, &ps->tick);
  ps->tick.data = ps;
  uv_timer_start(&ps->tick, on_tick, 1000, 1000);
  uv_unref((uv_handle_t *)&ps->tick);
  herald_loop_on_pass(loop, on_pass_end, ps);
  if (ps->cfg->demo && ps->thread == 0) {
    push_demo_start(ps, uv);
  }
  ps->timers_started = 1;
  if (ps->thread != 0) {
    return;
  }
  const char *first = ps->cfg->listen[0];
  const char *colon = strrchr(first, ':');
  printf("listening on %.*s:%d\n", (int)(colon - first), first,
         herald_server_port(ps->srv));
  fflush(stdout);
  push_log(PUSH_LOG_INFO,
           "ev=start listen=%.*s:%d engine=%s threads=%d demo=%d anonymous=%d",
           (int)(colon - first), first, herald_server_port(ps->srv),
           ps->engine->vt->name, ps->nthreads, ps->cfg->demo,
           ps->cfg->anonymous);
}

/* ---- signals ---------------------------------------------------------- */

/* Graceful shutdown of one loop: tell every client to reconnect (3001),
 * end SSE streams, stop the timers. The last loop to finish lets the
 * runtime drain and stop, so no client gets the runtime's 1001 before its
 * 3001. */
static void worker_shutdown(push_server *ps) {
  if (ps->stopping) {
    return;
  }
  ps->stopping = 1;
  push_log(PUSH_LOG_INFO, "ev=shutdown_loop thread=%d clients=%zu", ps->thread,
           ps->nclients);
  if (ps->engine != NULL) {
    /* Our clients leave every channel's presence now, while the engine
     * (Redis) is still there to hear it. */
    for (push_client *c = ps->clients; c; c = c->next) {
      push_client_presence_leave(c);
    }
  }
  for (push_client *c = ps->clients, *next; c; c = next) {
    next = c->next;
    push_client_disconnect(c, PUSH_D_SHUTDOWN, "server shutting down");
  }
  if (ps->engine != NULL) {
    push_engine_shutdown(ps->engine);
  }
  /* What the webhooks still hold is lost with the process: logged. */
  push_backend_stop(ps);
  push_pusher_stop(ps);
  if (ps->timers_started) {
    uv_timer_stop(&ps->tick);
    if (ps->cfg->demo) {
      uv_timer_stop(&ps->demo);
    }
    herald_loop_on_pass(ps->loop, NULL, NULL);
  }
  if (atomic_fetch_sub(&g_serving, 1) == 1) {
    herald_server_stop(ps->srv);
  }
}

static void worker_shutdown_post(void *arg) {
  worker_shutdown(arg);
}

static void on_signal(uv_signal_t *s, int signum) {
  push_server *ps = s->data;
  if (ps->stopping) {
    return;
  }
  push_log(PUSH_LOG_INFO, "ev=shutdown signal=%d threads=%d", signum,
           g_nworkers);
  uv_signal_stop(&ps->sigint);
  uv_signal_stop(&ps->sigterm);
  uv_signal_stop(&ps->sighup);
  for (int i = 0; i < g_nworkers; i++) {
    push_server *w = &g_workers[i];
    if (w != ps && herald_loop_post(w->loop, worker_shutdown_post, w) != 0) {
      /* Cannot reach that loop: stop the runtime now rather than hang. */
      herald_server_stop(ps->srv);
    }
  }
  worker_shutdown(ps);
}

/* SIGHUP: reload the TLS certificate for new connections. */
static void on_hup(uv_signal_t *s, int signum) {
  push_server *ps = s->data;
  (void)signum;
  if (ps->cfg->tls_cert == NULL) {
    push_log(PUSH_LOG_INFO, "ev=reload tls=off");
    return;
  }
  const char *why = NULL;
  int rv = herald_server_reload_tls(ps->srv, &why);
  if (rv == 0) {
    push_log(PUSH_LOG_INFO, "ev=reload tls=ok");
  } else {
    push_log(PUSH_LOG_ERROR, "ev=reload tls=failed error=\"%s\"", why);
  }
}

static void on_start_signals(herald_loop *loop, void *ud) {
  (void)ud;
  int i = atomic_fetch_add(&g_started, 1);
  push_server *ps = &g_workers[i];
  tl_server = ps;
  ps->loop = loop;
  if (i != 0) {
    on_loop_start(loop, ps);
    return;
  }
  uv_loop_t *uv = herald_loop_uv(loop);
  uv_signal_init(uv, &ps->sigint);
  uv_signal_init(uv, &ps->sigterm);
  ps->sigint.data = ps->sigterm.data = ps;
  uv_signal_start(&ps->sigint, on_signal, SIGINT);
  uv_signal_start(&ps->sigterm, on_signal, SIGTERM);
  uv_signal_init(uv, &ps->sighup);
  ps->sighup.data = ps;
  uv_signal_start(&ps->sighup, on_hup, SIGHUP);
  uv_unref((uv_handle_t *)&ps->sigint);
  uv_unref((uv_handle_t *)&ps->sigterm);
  uv_unref((uv_handle_t *)&ps->sighup);
  on_loop_start(loop, ps);
}

/* ---- main ------------------------------------------------------------- */

/* "a, b": the configured listen addresses, for messages. */
static void listen_list(const push_config *cfg, char *out, size_t cap) {
  size_t o = 0;
  out[0] = 0;
  for (size_t i = 0; i < cfg->nlisten && o < cap; i++) {
    int n = snprintf(out + o, cap - o, "%s%s", i ? ", " : "", cfg->listen[i]);
    o += n > 0 ? (size_t)n : 0;
  }
}

/* Secrets left as the documentation's placeholders stop the server: a
 * production server must not run with a key anyone can read. */
static int check_secrets(const push_config *cfg) {
  const struct {
    const char *key, *value;
  } s[] = {{"api_key", cfg->api_key},
           {"jwt.hmac_secret", cfg->jwt_hmac_secret},
           {"webhooks.secret", cfg->backend.webhooks_secret}};
  for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
    if (s[i].value && strcasestr(s[i].value, "change-me") != NULL) {
      fprintf(stderr,
              "herald: %s is still the placeholder \"%s\": set a secret of "
              "your own (docs/config.md)\n",
              s[i].key, s[i].value);
      return -1;
    }
  }
  if (cfg->jwt_hmac_secret && strlen(cfg->jwt_hmac_secret) < 32) {
    push_log(PUSH_LOG_WARN,
             "ev=weak_secret key=jwt.hmac_secret bytes=%zu advice=\"use at "
             "least 32 random bytes for HS256 (RFC 7518 3.2)\"",
             strlen(cfg->jwt_hmac_secret));
  }
  return 0;
}

/* The runtime's settings for the push server. */
static void server_config(const push_config *cfg, herald_server_config *sc) {
  herald_server_config_init(sc);
  sc->listen = (const char *const *)cfg->listen;
  sc->nlisten = cfg->nlisten;
  sc->threads = 1; /* push_server_main sets cfg->threads' count */
  sc->handle_signals = 0;
  sc->shutdown_grace_ms = cfg->shutdown_grace_s * 1000;
  sc->core.max_message_size = cfg->max_command_bytes;
  sc->core.max_frame_size = cfg->max_command_bytes;
  /* Pushes are referenced, never copied, however small: a subscriber's
   * queue holds entries pointing at the one encoded frame. */
  sc->core.copy_threshold = 0;
  sc->limits.ping_interval_ms = cfg->ping_interval_s * 1000;
  sc->limits.pong_timeout_ms = cfg->pong_timeout_s * 1000;
  sc->limits.send_hard_cap = cfg->output_cap;
  sc->limits.send_high_water = cfg->output_cap / 2;
  sc->limits.send_low_water = cfg->output_cap / 8;
  sc->limits.slow_policy = HERALD_SLOW_DROP; /* we answer with 3004 */
  sc->limits.max_http_body = cfg->max_http_body;
  sc->on_http = push_on_http;
}

/* The loops to run: threads, or for 0 one per core this process may run
 * on (its CPU affinity, as a container or taskset limits it). */
static int thread_count(const push_config *cfg) {
  if (cfg->threads > 0) {
    return (int)cfg->threads;
  }
  cpu_set_t set;
  long n = sched_getaffinity(0, sizeof(set), &set) == 0
               ? CPU_COUNT(&set)
               : sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > PUSH_THREADS_MAX ? PUSH_THREADS_MAX : (int)n;
}

/* What every loop's server shares, and each one's hub. With several loops
 * each hub keeps an equal share of max_history_bytes, so the node keeps at
 * most that much. Returns 0 or -1 (out of memory). */
static int workers_new(push_config *cfg, int n, const push_server *proto) {
  g_workers = calloc((size_t)n, sizeof(*g_workers));
  if (g_workers == NULL) {
    return -1;
  }
  g_nworkers = n;
  atomic_store(&g_started, 0);
  atomic_store(&g_serving, n);
  if (n > 1 && ((g_threads = push_threads_new(n)) == NULL ||
                (g_held = calloc((size_t)n, sizeof(*g_held))) == NULL ||
                (g_figs = calloc((size_t)n, sizeof(*g_figs))) == NULL)) {
    return -1;
  }
  push_ip_table *ips = push_ip_table_new();
  if (ips == NULL) {
    return -1;
  }
  int err = 0;
  struct pusher_node *pn = push_pusher_node_new(cfg, n, &err);
  for (int i = 0; i < n; i++) {
    push_server *ps = &g_workers[i];
    *ps = *proto;
    ps->thread = i;
    ps->nthreads = n;
    ps->ips = ips;
    ps->pusher_node = pn;
    ps->hub = push_hub_new(cfg->ns, cfg->nns);
    if (ps->hub == NULL) {
      return -1;
    }
    push_hub_set_history_limit(ps->hub, cfg->max_history_bytes / (uint64_t)n);
  }
  return err ? -1 : 0;
}

static void workers_free(void) {
  for (int i = 0; i < g_nworkers; i++) {
    push_server *ps = &g_workers[i];
    /* Clients still here (the grace period ran out) are gone by now. */
    while (ps->clients) {
      push_client_free(ps->clients);
    }
  }
  for (int i = 0; i < g_nworkers; i++) {
    push_server *ps = &g_workers[i];
    push_pusher_free(ps);
    push_engine_del(ps->engine);
    push_hub_del(ps->hub);
    while (ps->free_ops) {
      push_op *op = ps->free_ops;
      ps->free_ops = op->next;
      free(op);
    }
    push_buf_free(&ps->result);
    push_buf_free(&ps->envelope);
  }
  if (g_workers != NULL) {
    push_ip_table_del(g_workers[0].ips);
    push_pusher_node_del(g_workers[0].pusher_node);
  }
  push_threads_del(g_threads);
  g_threads = NULL;
  free((void *)g_held);
  g_held = NULL;
  free(g_figs);
  g_figs = NULL;
  free(g_workers);
  g_workers = NULL;
  g_nworkers = 0;
}

int push_server_main(push_config *cfg) {
  push_server proto;
  push_server *ps = &proto;
  memset(ps, 0, sizeof(*ps));
  ps->cfg = cfg;
  ps->started_ms = push_now_ms();
  push_log_level = cfg->log_level;
  if (check_secrets(cfg) != 0) {
    return 2;
  }
  ps->keys.hmac_secret = cfg->jwt_hmac_secret;
  ps->keys.rsa_pem = cfg->jwt_rsa_pem;
  ps->keys.ec_pem = cfg->jwt_ec_pem;
  if (cfg->node_name) {
    snprintf(ps->node, sizeof(ps->node), "%s", cfg->node_name);
  } else if (push_random_id(ps->node, 8) != 0) {
    /* 8 random [a-z0-9]: unique enough among a cluster's nodes. */
    fprintf(stderr, "herald: getrandom failed\n");
    return 1;
  }
  int nthreads = thread_count(cfg);
  if (workers_new(cfg, nthreads, ps) != 0) {
    workers_free();
    fprintf(stderr, "herald: out of memory\n");
    return 1;
  }
  herald_server_config sc;
  server_config(cfg, &sc);
  sc.threads = nthreads;
  herald_tls_cert cert = {cfg->tls_cert, cfg->tls_key};
  if (cfg->tls_cert) {
    sc.tls.certs = &cert;
    sc.tls.ncerts = 1;
    const char *why;
    if (herald_tls_check(&sc.tls, &why) != 0) {
      fprintf(stderr, "herald: TLS (%s, %s): %s\n", cfg->tls_cert,
              cfg->tls_key ? cfg->tls_key : "no key", why);
      workers_free();
      return 2;
    }
  }
  herald_server *srv;
  int rv = herald_server_new(&srv, &sc);
  if (rv != 0) {
    char addrs[512];
    listen_list(cfg, addrs, sizeof(addrs));
    fprintf(stderr, "herald: %s (listen: %s)\n",
            rv == HERALD_ERR_INVALID_ARG ? "invalid listen address"
                                         : herald_rt_strerror(rv),
            addrs);
    workers_free();
    return 2;
  }
  for (int i = 0; i < nthreads; i++) {
    g_workers[i].srv = srv;
  }
  herald_ws_callbacks cb;
  push_ws_callbacks(&cb);
  herald_server_route(srv, "*", &cb, NULL);
  herald_server_on_loop_start(srv, on_start_signals, NULL);
  rv = herald_server_run(srv);
  int exit_code = 0;
  for (int i = 0; i < nthreads; i++) {
    if (g_workers[i].exit_code > exit_code) {
      exit_code = g_workers[i].exit_code;
    }
  }
  herald_server_del(srv);
  workers_free();
  if (rv != 0) {
    char addrs[512];
    listen_list(cfg, addrs, sizeof(addrs));
    fprintf(stderr, "herald: cannot listen on %s: %s\n", addrs,
            herald_rt_strerror(rv));
    return 1;
  }
  push_log(PUSH_LOG_INFO, "ev=stopped");
  return exit_code;
}
