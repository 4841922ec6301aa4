/*
 * server.c - listeners, workers and shutdown.
 *
 * Each worker is a loop on its own thread with its own listening sockets,
 * bound to the same addresses with SO_REUSEPORT: the kernel spreads incoming
 * connections over the workers, and a connection stays on the worker that
 * accepted it for its whole life, so nothing is shared between threads on
 * the message path. Worker 0 runs on the thread that called
 * herald_server_run() and also owns the signal handlers.
 *
 * All sockets are bound before any worker starts, in order, so that a port
 * of 0 resolves to one port that the other workers then share.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rt/bigmem.h"
#include "rt/internal.h"
#include "rt/tls.h"

typedef struct route {
  char *path;     /* "*" for the default */
  ws_endpoint ep; /* its callbacks, ud and the server's limits */
  struct route *next;
} route;

typedef struct listener {
  io_item io;
  herald_loop *loop;
  int paused; /* out of descriptors: retried on the next tick */
  struct listener *next;
} listener;

typedef struct worker {
  herald_server *srv;
  herald_loop *loop;
  pthread_t thread;
  listener *listeners;
  uv_async_t stop_async;
  uv_timer_t grace;
  uv_signal_t sigint, sigterm, sighup;
  int has_handles; /* stop_async and grace are initialised */
  int has_signals;
  int stopping;
} worker;

struct herald_server {
  herald_server_config cfg;
  herald_config core;
  ws_endpoint unrouted; /* connections not routed yet: no callbacks */
  route *routes;
  int nworkers;
  worker *workers;
  atomic_int stop_requested;
  _Atomic int port; /* read from any thread (herald_server_port) */
  void (*on_loop_start)(herald_loop *loop, void *ud);
  void *on_loop_start_ud;
  pthread_mutex_t tls_mu; /* guards tls: swapped by reloads */
  herald_tls_set *tls;
  herald_budget *budget;         /* our own, when cfg.core.budget is NULL */
  herald_budget *deflate_budget; /* our own, when cfg.core.deflate.budget
                                    is NULL */
};

/* ---- configuration ------------------------------------------------------ */

HERALD_API void herald_server_config_init(herald_server_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->threads = 1;
  cfg->handle_signals = 1;
  cfg->shutdown_grace_ms = 5000;
  cfg->backlog = 1024;
  cfg->max_partial_bytes = (uint64_t)256 << 20;
  cfg->max_deflate_bytes = (uint64_t)1 << 30;
  herald_config_init(&cfg->core, HERALD_ROLE_SERVER);
  herald_rt_limits_init(&cfg->limits);
}

/* Parses "host:port", "[v6]:port" or ":port" into addr. */
static int parse_listen(const char *s, struct sockaddr_storage *addr) {
  char host[64];
  const char *colon;
  if (s[0] == '[') {
    const char *end = strchr(s, ']');
    if (end == NULL || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host)) {
      return HERALD_ERR_INVALID_ARG;
    }
    memcpy(host, s + 1, (size_t)(end - s - 1));
    host[end - s - 1] = 0;
    colon = end + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host)) {
      return HERALD_ERR_INVALID_ARG;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    if (host[0] == 0) {
      strcpy(host, "0.0.0.0");
    }
  }
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] == 0 || *end != 0 || port < 0 || port > 65535) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) == 0 ||
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) == 0) {
    return 0;
  }
  return HERALD_ERR_INVALID_ARG;
}

HERALD_API int herald_server_new(herald_server **psrv,
                                 const herald_server_config *cfg) {
  if (cfg == NULL || cfg->nlisten == 0 || cfg->listen == NULL) {
    return HERALD_ERR_INVALID_ARG;
  }
  for (size_t i = 0; i < cfg->nlisten; i++) {
    struct sockaddr_storage ss;
    if (cfg->listen[i] == NULL || parse_listen(cfg->listen[i], &ss) != 0) {
      return HERALD_ERR_INVALID_ARG;
    }
  }
  herald_server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL) {
    return HERALD_ERR_NOMEM;
  }
  srv->cfg = *cfg;
  srv->unrouted.limits = &srv->cfg.limits;
  pthread_mutex_init(&srv->tls_mu, NULL);
  if (cfg->tls.ncerts > 0) {
    const char *why;
    int rv = herald__tls_set_new(&cfg->tls, &srv->tls, &why);
    if (rv != 0) {
      herald_server_del(srv); /* frees what is made so far */
      return rv;
    }
  }
  srv->core = cfg->core;
  srv->core.role = HERALD_ROLE_SERVER;
  if (srv->core.mem == NULL) {
    srv->core.mem = &herald__big_mem; /* large buffers reused */
  }
  if (srv->core.budget == NULL) {
    int rv = herald_budget_new(&srv->budget, cfg->max_partial_bytes, NULL);
    if (rv != 0) {
      herald_server_del(srv);
      return rv;
    }
    srv->core.budget = srv->budget;
  }
  if (srv->core.deflate.budget == NULL) {
    int rv =
        herald_budget_new(&srv->deflate_budget, cfg->max_deflate_bytes, NULL);
    if (rv != 0) {
      herald_server_del(srv);
      return rv;
    }
    srv->core.deflate.budget = srv->deflate_budget;
  }
  srv->nworkers =
      cfg->threads > 0 ? cfg->threads : (int)uv_available_parallelism();
  *psrv = srv;
  return 0;
}

HERALD_API int herald_server_route(herald_server *srv, const char *path,
                                   const herald_ws_callbacks *cb, void *ud) {
  if (path == NULL || cb == NULL || (path[0] != '/' && strcmp(path, "*"))) {
    return HERALD_ERR_INVALID_ARG;
  }
  route *r = calloc(1, sizeof(*r));
  if (r == NULL || (r->path = strdup(path)) == NULL) {
    free(r);
    return HERALD_ERR_NOMEM;
  }
  r->ep.cb = *cb;
  r->ep.ud = ud;
  r->ep.limits = &srv->cfg.limits;
  r->next = srv->routes;
  srv->routes = r;
  return 0;
}

HERALD_API void herald_server_on_loop_start(herald_server *srv,
                                            void (*fn)(herald_loop *, void *),
                                            void *ud) {
  srv->on_loop_start = fn;
  srv->on_loop_start_ud = ud;
}

/* ws_owner_ops.route: the endpoint at path, else the "*" one. */
static const ws_endpoint *server_route(herald_ws *ws, herald_str path) {
  herald_server *srv = ws->cold->srv;
  route *def = NULL;
  for (route *r = srv->routes; r; r = r->next) {
    if (strlen(r->path) == path.len &&
        memcmp(r->path, path.ptr, path.len) == 0) {
      return &r->ep;
    }
    if (strcmp(r->path, "*") == 0) {
      def = r;
    }
  }
  return def ? &def->ep : NULL;
}

/* ws_owner_ops.http: the configured on_http. */
static int server_http(herald_ws *ws, herald_http_fn *fn, void **ud) {
  herald_server *srv = ws->cold->srv;
  *fn = srv->cfg.on_http;
  *ud = srv->cfg.http_user_data;
  return *fn != NULL;
}

static const ws_owner_ops server_owner = {.route = server_route,
                                          .http = server_http};

HERALD_API int herald_server_port(const herald_server *srv) {
  return atomic_load_explicit(&srv->port, memory_order_acquire);
}

/* ---- accepting ---------------------------------------------------------- */

/* loop->on_listener: accepts up to 64 connections waiting on l. */
static void listener_ready(herald_loop *loop, io_item *io) {
  listener *l = (listener *)io;
  herald_server *srv = loop->srv;
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    int fd = accept4(l->io.fd, (struct sockaddr *)&ss, &slen,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Out of descriptors: stop listening until the next tick rather
         * than spin on a socket that stays readable. */
        herald__epoll_del(loop, &l->io);
        l->paused = 1;
      }
      return;
    }
    if (atomic_load(&srv->stop_requested)) {
      close(fd);
      continue;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    herald_ws *ws = herald__ws_new(loop, fd, &srv->core, &srv->unrouted);
    if (ws == NULL) {
      close(fd);
      continue;
    }
    ws->cold->srv = srv;
    ws->cold->owner = &server_owner;
    if (srv->tls) {
      pthread_mutex_lock(&srv->tls_mu);
      herald_tls_set *set = herald__tls_set_ref(srv->tls);
      pthread_mutex_unlock(&srv->tls_mu);
      int rv = herald__tls_attach_server(ws, set);
      herald__tls_set_unref(set);
      if (rv != 0) {
        herald__ws_abort(ws, "out of memory");
        continue;
      }
    }
    herald__ws_start(ws);
  }
}

/* loop->on_tick: listening again on listeners paused for lack of
 * descriptors. */
static void listeners_retry(herald_loop *loop) {
  herald_server *srv = loop->srv;
  if (srv == NULL || atomic_load(&srv->stop_requested)) {
    return;
  }
  for (int w = 0; w < srv->nworkers; w++) {
    if (srv->workers[w].loop != loop) {
      continue;
    }
    for (listener *l = srv->workers[w].listeners; l; l = l->next) {
      if (l->paused && herald__epoll_add(loop, &l->io, EPOLLIN) == 0) {
        l->paused = 0;
      }
    }
  }
}

/* Binds one listening socket; port < 0 keeps the address's port. */
static int bind_listener(const char *spec, int port, int backlog, int reuseport,
                         int *pfd, int *pport) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  if (parse_listen(spec, &ss) != 0) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (port >= 0) {
    if (ss.ss_family == AF_INET) {
      ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    } else {
      ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    }
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuseport) {
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  }
  if (ss.ss_family == AF_INET6) {
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  socklen_t len = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(struct sockaddr_in6);
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  struct sockaddr_storage bound;
  socklen_t blen = sizeof(bound);
  getsockname(fd, (struct sockaddr *)&bound, &blen);
  *pport = ntohs(bound.ss_family == AF_INET
                     ? ((struct sockaddr_in *)&bound)->sin_port
                     : ((struct sockaddr_in6 *)&bound)->sin6_port);
  *pfd = fd;
  return 0;
}

/* ---- shutdown ----------------------------------------------------------- */

static void close_listeners(worker *w) {
  for (listener *l = w->listeners; l; l = l->next) {
    if (l->io.fd >= 0) {
      if (!l->paused) {
        herald__epoll_del(w->loop, &l->io);
      }
      close(l->io.fd);
      l->io.fd = -1;
    }
  }
}

static void worker_done(worker *w) {
  uv_timer_stop(&w->grace);
  herald__loop_stop_now(w->loop);
}

static void worker_on_idle(herald_loop *loop) {
  herald_server *srv = loop->srv;
  for (int i = 0; i < srv->nworkers; i++) {
    if (srv->workers[i].loop == loop && srv->workers[i].stopping) {
      worker_done(&srv->workers[i]);
    }
  }
}

static void on_grace(uv_timer_t *t) {
  worker *w = t->data;
  herald_loop *loop = w->loop;
  /* Whoever has not finished the close handshake by now is cut off. */
  while (loop->all) {
    herald__ws_abort(loop->all, "shutdown grace period over");
  }
  worker_done(w);
}

static void worker_stop(worker *w) {
  if (w->stopping) {
    return;
  }
  w->stopping = 1;
  close_listeners(w);
  herald_loop *loop = w->loop;
  loop->on_idle = worker_on_idle;
  /* Snapshot the list: callbacks may end other connections meanwhile. A
   * finished connection stays allocated until the end of the pass. */
  size_t n = loop->nconns;
  herald_ws **all = n ? malloc(n * sizeof(*all)) : NULL;
  size_t k = 0;
  for (herald_ws *ws = loop->all; ws && k < n; ws = ws->next) {
    all[k++] = ws;
  }
  for (size_t i = 0; i < k; i++) {
    herald__ws_shutdown(all[i]);
  }
  free(all);
  if (loop->nconns == 0) {
    worker_done(w);
  } else {
    uv_timer_start(&w->grace, on_grace, w->srv->cfg.shutdown_grace_ms, 0);
  }
}

static void on_stop_async(uv_async_t *a) {
  worker_stop(a->data);
}

HERALD_API void herald_server_stop(herald_server *srv) {
  atomic_store(&srv->stop_requested, 1);
  if (srv->workers) {
    for (int i = 0; i < srv->nworkers; i++) {
      if (srv->workers[i].has_handles) {
        uv_async_send(&srv->workers[i].stop_async);
      }
    }
  }
}

HERALD_API int herald_server_reload_tls(herald_server *srv,
                                        const char **error) {
  const char *why = "no TLS certificates configured";
  herald_tls_set *set = NULL;
  int rv = HERALD_ERR_INVALID_ARG;
  if (srv->cfg.tls.ncerts > 0) {
    rv = herald__tls_set_new(&srv->cfg.tls, &set, &why);
  }
  if (rv != 0) {
    if (error) {
      *error = why;
    }
    return rv;
  }
  pthread_mutex_lock(&srv->tls_mu);
  herald_tls_set *old = srv->tls;
  srv->tls = set;
  pthread_mutex_unlock(&srv->tls_mu);
  herald__tls_set_unref(old); /* open connections hold their own refs */
  return 0;
}

static void on_signal(uv_signal_t *s, int signum) {
  worker *w = s->data;
  herald_server *srv = w->srv;
  if (signum == SIGHUP) {
    const char *why = NULL;
    int rv = herald_server_reload_tls(srv, &why);
    if (srv->cfg.on_tls_reload) {
      srv->cfg.on_tls_reload(rv, rv ? why : NULL,
                             srv->cfg.tls_reload_user_data);
    }
    return;
  }
  herald_server_stop(srv);
}

/* ---- running ------------------------------------------------------------ */

static void noop_close(uv_handle_t *h) {
  (void)h;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  if (w->srv->on_loop_start) {
    w->srv->on_loop_start(w->loop, w->srv->on_loop_start_ud);
  }
  herald_loop_run(w->loop);
  return NULL;
}

static void worker_cleanup(worker *w) {
  if (w->loop == NULL) {
    return;
  }
  close_listeners(w);
  if (w->has_handles) {
    uv_close((uv_handle_t *)&w->stop_async, noop_close);
    uv_close((uv_handle_t *)&w->grace, noop_close);
  }
  if (w->has_signals) {
    uv_close((uv_handle_t *)&w->sigint, noop_close);
    uv_close((uv_handle_t *)&w->sigterm, noop_close);
    uv_close((uv_handle_t *)&w->sighup, noop_close);
  }
  while (w->loop->all) {
    herald__ws_abort(w->loop->all, "server stopped");
  }
  herald_loop_del(w->loop);
  w->loop = NULL;
  while (w->listeners) {
    listener *next = w->listeners->next;
    free(w->listeners);
    w->listeners = next;
  }
}

HERALD_API int herald_server_run(herald_server *srv) {
  int n = srv->nworkers;
  srv->workers = calloc((size_t)n, sizeof(worker));
  if (srv->workers == NULL) {
    return HERALD_ERR_NOMEM;
  }
  int *ports = calloc(srv->cfg.nlisten, sizeof(int));
  int rv = ports ? 0 : HERALD_ERR_NOMEM;
  for (int i = 0; i < n && rv == 0; i++) {
    worker *w = &srv->workers[i];
    w->srv = srv;
    rv = herald_loop_new_backend(&w->loop, NULL, srv->cfg.io_backend);
    if (rv != 0) {
      break;
    }
    w->loop->srv = srv;
    w->loop->on_listener = listener_ready;
    w->loop->on_tick = listeners_retry;
    for (size_t a = 0; a < srv->cfg.nlisten && rv == 0; a++) {
      listener *l = calloc(1, sizeof(*l));
      if (l == NULL) {
        rv = HERALD_ERR_NOMEM;
        break;
      }
      l->io.kind = IO_LISTENER;
      l->loop = w->loop;
      int port = 0;
      rv = bind_listener(srv->cfg.listen[a], i == 0 ? -1 : ports[a],
                         srv->cfg.backlog, n > 1, &l->io.fd, &port);
      if (rv != 0) {
        free(l);
        break;
      }
      if (i == 0) {
        ports[a] = port;
      }
      l->next = w->listeners;
      w->listeners = l;
      herald__epoll_add(w->loop, &l->io, EPOLLIN);
    }
    if (rv != 0) {
      break;
    }
    uv_async_init(w->loop->uv, &w->stop_async, on_stop_async);
    w->stop_async.data = w;
    uv_timer_init(w->loop->uv, &w->grace);
    w->grace.data = w;
    w->has_handles = 1;
    if (i == 0 && srv->cfg.handle_signals) {
      uv_signal_init(w->loop->uv, &w->sigint);
      uv_signal_init(w->loop->uv, &w->sigterm);
      w->sigint.data = w->sigterm.data = w;
      uv_signal_init(w->loop->uv, &w->sighup);
      w->sighup.data = w;
      uv_signal_start(&w->sigint, on_signal, SIGINT);
      uv_signal_start(&w->sigterm, on_signal, SIGTERM);
      if (srv->tls) {
        uv_signal_start(&w->sighup, on_signal, SIGHUP);
      }
      w->has_signals = 1;
    }
  }
  if (rv == 0) {
    atomic_store_explicit(&srv->port, ports[0], memory_order_release);
    for (int i = 1; i < n && rv == 0; i++) {
      if (pthread_create(&srv->workers[i].thread, NULL, worker_main,
                         &srv->workers[i]) != 0) {
        rv = HERALD_ERR_NOMEM;
        for (int j = 1; j < i; j++) {
          uv_async_send(&srv->workers[j].stop_async);
        }
        n = i;
      }
    }
    if (rv == 0) {
      if (atomic_load(&srv->stop_requested)) {
        herald_server_stop(srv);
      }
      worker_main(&srv->workers[0]);
    }
    for (int i = 1; i < n; i++) {
      pthread_join(srv->workers[i].thread, NULL);
    }
  }
  for (int i = 0; i < srv->nworkers; i++) {
    worker_cleanup(&srv->workers[i]);
  }
  free(srv->workers);
  srv->workers = NULL;
  free(ports);
  return rv;
}

HERALD_API const herald_budget *herald_server_budget(const herald_server *srv) {
  return srv->core.budget;
}

HERALD_API const herald_budget *
herald_server_deflate_budget(const herald_server *srv) {
  return srv->core.deflate.budget;
}

HERALD_API void herald_server_del(herald_server *srv) {
  if (srv == NULL) {
    return;
  }
  herald_budget_del(srv->budget);
  herald_budget_del(srv->deflate_budget);
  herald__tls_set_unref(srv->tls);
  pthread_mutex_destroy(&srv->tls_mu);
  while (srv->routes) {
    route *next = srv->routes->next;
    free(srv->routes->path);
    free(srv->routes);
    srv->routes = next;
  }
  free(srv);
}
