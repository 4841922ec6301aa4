/*
 * client.c - connecting: URL, DNS through libuv, a non-blocking connect to
 * each resolved address in turn, then the opening handshake over the same
 * machinery as server connections. connect_timeout_ms covers all of it.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rt/bigmem.h"
#include "rt/internal.h"
#include "rt/tls.h"

struct client_state {
  herald_ws *ws; /* NULL once the connection ended (DNS may outlive it) */
  uv_getaddrinfo_t dns;
  int dns_pending;
  int orphan; /* the connection was freed while DNS was pending */
  struct addrinfo *addrs, *next_addr;
  char *host;     /* for DNS */
  char *hostport; /* Host header */
  char *path;
  char *origin;
  char **protocols;
  size_t nprotocols;
  herald_header *headers;
  size_t nheaders;
  char *bind_address;
  int tls;
  int tls_insecure;
  char *tls_ca_file;
  char *tls_server_name;
  herald_config core;
  herald_rt_limits limits;
  ws_endpoint ep; /* the callbacks, their ud and &limits */
};

HERALD_API void herald_client_config_init(herald_client_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->connect_timeout_ms = 10000;
  herald_config_init(&cfg->core, HERALD_ROLE_CLIENT);
  herald_rt_limits_init(&cfg->limits);
}

static void client_free_strings(struct client_state *c) {
  free(c->host);
  free(c->hostport);
  free(c->path);
  free(c->origin);
  for (size_t i = 0; i < c->nprotocols; i++) {
    free(c->protocols[i]);
  }
  free(c->protocols);
  for (size_t i = 0; i < c->nheaders; i++) {
    free((void *)c->headers[i].name.ptr);
    free((void *)c->headers[i].value.ptr);
  }
  free(c->headers);
  free(c->bind_address);
  free(c->tls_ca_file);
  free(c->tls_server_name);
  if (c->addrs) {
    freeaddrinfo(c->addrs); /* from getaddrinfo, directly or via libuv */
  }
}

/* ws_owner_ops.finished: a pending DNS request is cancelled and, when it
 * completes, touches nothing. The state stays until client_free: the core
 * connection borrows its config until it is deleted. */
static void client_finished(herald_ws *ws) {
  struct client_state *c = ws->cold->cli;
  c->ws = NULL;
  if (c->dns_pending) {
    uv_cancel((uv_req_t *)&c->dns);
  }
}

/* ws_owner_ops.free: the connection is freed; free the state now unless
 * DNS still holds it. */
static void client_free(herald_ws *ws) {
  struct client_state *c = ws->cold->cli;
  c->ws = NULL;
  if (c->dns_pending) {
    c->orphan = 1; /* on_dns frees it */
    return;
  }
  client_free_strings(c);
  free(c);
}

/* Splits ws://host[:port]/path into parts. Returns 0 or INVALID_ARG. */
static int parse_url(const char *url, struct client_state *c, int *port) {
  const char *h;
  if (strncmp(url, "ws://", 5) == 0) {
    h = url + 5;
  } else if (strncmp(url, "wss://", 6) == 0) {
    h = url + 6;
    c->tls = 1;
  } else {
    return HERALD_ERR_INVALID_ARG;
  }
  const char *slash = strchr(h, '/');
  const char *q = strchr(h, '?');
  const char *end = slash ? slash : (q ? q : h + strlen(h));
  if (q && q < end) {
    end = q;
  }
  const char *hend, *colon = NULL;
  if (*h == '[') {
    hend = memchr(h, ']', (size_t)(end - h));
    if (hend == NULL) {
      return HERALD_ERR_INVALID_ARG;
    }
    if (hend + 1 < end) {
      if (hend[1] != ':') {
        return HERALD_ERR_INVALID_ARG;
      }
      colon = hend + 1;
    }
    c->host = strndup(h + 1, (size_t)(hend - h - 1));
  } else {
    colon = memchr(h, ':', (size_t)(end - h));
    hend = colon ? colon : end;
    c->host = strndup(h, (size_t)(hend - h));
  }
  *port = c->tls ? 443 : 80;
  if (colon) {
    char *pend;
    long p = strtol(colon + 1, &pend, 10);
    if (pend != end || p <= 0 || p > 65535) {
      return HERALD_ERR_INVALID_ARG;
    }
    *port = (int)p;
  }
  c->hostport = strndup(h, (size_t)(end - h));
  if (*end == '/') {
    c->path = strdup(end);
  } else {
    size_t n = strlen(end) + 2;
    c->path = malloc(n);
    if (c->path) {
      snprintf(c->path, n, "/%s", end);
    }
  }
  if (c->host == NULL || c->hostport == NULL || c->path == NULL ||
      c->host[0] == 0) {
    return HERALD_ERR_INVALID_ARG;
  }
  return 0;
}

static void try_next_address(herald_ws *ws);

/* ws_owner_ops.connected: the connect attempt ended; on success TLS and the
 * opening handshake start, else the next address is tried. */
static void client_connected(herald_ws *ws) {
  struct client_state *c = ws->cold->cli;
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(ws->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    herald__epoll_del(ws->loop, &ws->io);
    ws->flags &= (uint16_t)~WS_IN_EPOLL;
    close(ws->io.fd);
    ws->io.fd = -1;
    ws->cold->error =
        err == ECONNREFUSED ? "connection refused" : "connect failed";
    try_next_address(ws);
    return;
  }
  ws->cold->error = NULL;
  ws->flags &= (uint16_t)~WS_CONNECTING;
  if (c->tls) {
    const char *why = NULL;
    if (herald__tls_attach_client(
            ws, c->tls_server_name ? c->tls_server_name : c->host,
            c->tls_ca_file, c->tls_insecure, &why) != 0) {
      herald__ws_abort(ws, why);
      return;
    }
  }
  int one = 1;
  (void)setsockopt(ws->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  herald_client_opts o = {
      .host = c->hostport,
      .path = c->path,
      .origin = c->origin,
      .subprotocols = (const char *const *)c->protocols,
      .nsubprotocols = c->nprotocols,
      .headers = c->headers,
      .nheaders = c->nheaders,
  };
  if (herald_conn_client_start(ws->conn, &o) != 0) {
    herald__ws_abort(ws, "could not build the handshake request");
    return;
  }
  if (herald__epoll_mod(ws->loop, &ws->io, EPOLLIN | EPOLLRDHUP) == 0) {
    ws->io.events = 1;
  }
  herald__ws_flush(ws);
}

static void try_next_address(herald_ws *ws) {
  struct client_state *c = ws->cold->cli;
  while (c->next_addr) {
    struct addrinfo *ai = c->next_addr;
    c->next_addr = ai->ai_next;
    int fd =
        socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      continue;
    }
    if (c->bind_address) {
      struct sockaddr_storage ss;
      memset(&ss, 0, sizeof(ss));
      int ok =
          ai->ai_family == AF_INET
              ? uv_ip4_addr(c->bind_address, 0, (struct sockaddr_in *)&ss)
              : uv_ip6_addr(c->bind_address, 0, (struct sockaddr_in6 *)&ss);
      socklen_t sl = ai->ai_family == AF_INET ? sizeof(struct sockaddr_in)
                                              : sizeof(struct sockaddr_in6);
      if (ok != 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        close(fd);
        ws->cold->error = "could not bind the source address";
        continue;
      }
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      ws->cold->error =
          errno == ECONNREFUSED ? "connection refused" : "connect failed";
      close(fd);
      continue;
    }
    ws->io.fd = fd;
    if (herald__epoll_add(ws->loop, &ws->io, EPOLLOUT | EPOLLRDHUP) == 0) {
      ws->flags |= WS_IN_EPOLL;
      ws->io.events = 2;
      return;
    }
    close(fd);
    ws->io.fd = -1;
  }
  herald__ws_abort(ws, ws->cold->error ? ws->cold->error
                                       : "no address to connect to");
}

static void on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct client_state *c = req->data;
  c->dns_pending = 0;
  herald_ws *ws = c->ws;
  if (ws == NULL) {
    if (res) {
      uv_freeaddrinfo(res);
    }
    if (c->orphan) {
      client_free_strings(c);
      free(c);
    }
    return;
  }
  if (status != 0) {
    herald__ws_abort(ws, "could not resolve the host name");
    return;
  }
  c->addrs = c->next_addr = res;
  try_next_address(ws);
}

HERALD_API int herald_connect(herald_loop *loop,
                              const herald_client_config *cfg,
                              const herald_ws_callbacks *cb, void *ud,
                              herald_ws **pws) {
  if (loop == NULL || cfg == NULL || cfg->url == NULL || cb == NULL) {
    return HERALD_ERR_INVALID_ARG;
  }
  struct client_state *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return HERALD_ERR_NOMEM;
  }
  int port;
  int rv = parse_url(cfg->url, c, &port);
  if (rv == 0 && cfg->origin && (c->origin = strdup(cfg->origin)) == NULL) {
    rv = HERALD_ERR_NOMEM;
  }
  if (rv == 0 && cfg->tls_ca_file &&
      (c->tls_ca_file = strdup(cfg->tls_ca_file)) == NULL) {
    rv = HERALD_ERR_NOMEM;
  }
  if (rv == 0 && cfg->tls_server_name &&
      (c->tls_server_name = strdup(cfg->tls_server_name)) == NULL) {
    rv = HERALD_ERR_NOMEM;
  }
  c->tls_insecure = cfg->tls_insecure;
  if (rv == 0 && cfg->bind_address &&
      (c->bind_address = strdup(cfg->bind_address)) == NULL) {
    rv = HERALD_ERR_NOMEM;
  }
  if (rv == 0 && cfg->nsubprotocols) {
    c->protocols = calloc(cfg->nsubprotocols, sizeof(char *));
    rv = c->protocols ? 0 : HERALD_ERR_NOMEM;
    for (size_t i = 0; rv == 0 && i < cfg->nsubprotocols; i++) {
      c->protocols[i] = strdup(cfg->subprotocols[i]);
      rv = c->protocols[i] ? 0 : HERALD_ERR_NOMEM;
      c->nprotocols++;
    }
  }
  if (rv == 0 && cfg->nheaders) {
    c->headers = calloc(cfg->nheaders, sizeof(herald_header));
    rv = c->headers ? 0 : HERALD_ERR_NOMEM;
    for (size_t i = 0; rv == 0 && i < cfg->nheaders; i++) {
      const herald_header *h = &cfg->headers[i];
      char *name = strndup(h->name.ptr, h->name.len);
      char *value = strndup(h->value.ptr ? h->value.ptr : "", h->value.len);
      c->headers[i] =
          (herald_header){{name, h->name.len}, {value, h->value.len}};
      c->nheaders++;
      rv = name && value ? 0 : HERALD_ERR_NOMEM;
    }
  }
  if (rv != 0) {
    client_free_strings(c);
    free(c);
    return rv;
  }
  c->core = cfg->core;
  c->core.role = HERALD_ROLE_CLIENT;
  if (c->core.mem == NULL) {
    c->core.mem = &herald__big_mem; /* large buffers reused */
  }
  c->limits = cfg->limits;
  c->ep.cb = *cb;
  c->ep.ud = ud;
  c->ep.limits = &c->limits;
  herald_ws *ws = herald__ws_new(loop, -1, &c->core, &c->ep);
  if (ws == NULL) {
    client_free_strings(c);
    free(c);
    return HERALD_ERR_NOMEM;
  }
  static const ws_owner_ops client_owner = {.connected = client_connected,
                                            .finished = client_finished,
                                            .free = client_free};
  ws->cold->cli = c;
  ws->cold->owner = &client_owner;
  c->ws = ws;
  ws->flags |= WS_CLIENT | WS_CONNECTING;
  uint64_t now = herald__now(loop);
  ws->last_rx = (uint32_t)now;
  if (cfg->connect_timeout_ms) {
    herald__wheel_set(ws, now + cfg->connect_timeout_ms);
  }
  char portstr[8];
  snprintf(portstr, sizeof(portstr), "%d", port);
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  /* A numeric address needs no resolver: skip libuv's thread pool. */
  struct addrinfo numeric = hints, *res = NULL;
  numeric.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  if (getaddrinfo(c->host, portstr, &numeric, &res) == 0) {
    c->addrs = c->next_addr = res;
    if (pws) {
      *pws = ws;
    }
    try_next_address(ws);
    return 0;
  }
  c->dns.data = c;
  rv = uv_getaddrinfo(loop->uv, &c->dns, on_dns, c->host, portstr, &hints);
  if (rv != 0) {
    /* Report through on_close like any other failure to connect. */
    herald__ws_abort(ws, "could not start DNS resolution");
  } else {
    c->dns_pending = 1;
  }
  if (pws) {
    *pws = ws;
  }
  return 0;
}
