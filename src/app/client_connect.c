/* client_connect.c - how `herald client` reaches its server: DNS through
 * libuv for the host (or the proxy), then a non-blocking connect to each
 * address in turn, each failure named, until one answers. */
#include "app/client_net_int.h"

static void connected(cnet *n) {
  int one = 1;
  (void)setsockopt(n->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  cn_vlog(n, "connected to %s%s", n->peer, n->phost ? " (the proxy)" : "");
  if (n->phost) {
    cn_start_proxy(n);
  } else if (n->tls) {
    cn_start_tls(n);
  } else {
    cn_start_handshake(n);
  }
}

void cn_try_next_address(cnet *n) {
  const char *last = "no address";
  int lasterr = 0;
  while (n->next_addr) {
    struct addrinfo *ai = n->next_addr;
    n->next_addr = ai->ai_next;
    cn_poll_drop(&n->poll);
    if (n->fd >= 0) {
      close(n->fd);
      n->fd = -1;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ai->ai_family == AF_INET) {
      struct sockaddr_in *s = (struct sockaddr_in *)ai->ai_addr;
      inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
      port = ntohs(s->sin_port);
    } else if (ai->ai_family == AF_INET6) {
      struct sockaddr_in6 *s = (struct sockaddr_in6 *)ai->ai_addr;
      inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
      port = ntohs(s->sin6_port);
    }
    snprintf(n->peer, sizeof(n->peer), "%s%s%s:%d",
             ai->ai_family == AF_INET6 ? "[" : "", ip,
             ai->ai_family == AF_INET6 ? "]" : "", port);
    cn_vlog(n, "connecting to %s", n->peer);
    int fd =
        socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      lasterr = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      lasterr = errno;
      close(fd);
      continue;
    }
    n->fd = fd;
    if (cn_poll_open(n, &n->poll, fd) != 0) {
      lasterr = ENOMEM;
      close(fd);
      n->fd = -1;
      continue;
    }
    n->poll_events = 0;
    n->state = N_CONNECT;
    cn_poll_set(n, UV_WRITABLE);
    return;
  }
  if (lasterr) {
    last = strerror(lasterr);
  }
  cn_fail(n, "cannot connect to %s%s%s: %s", n->phost ? "the proxy " : "",
          n->phost ? "" : n->target, n->phost ? n->peer : "", last);
}

void cn_on_connect_ready(cnet *n) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(n->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err == 0) {
    n->state = N_HANDSHAKE; /* placeholder until the next stage says */
    connected(n);
    return;
  }
  cn_vlog(n, "%s: %s", n->peer, strerror(err));
  if (n->next_addr == NULL) {
    const char *name = n->phost ? n->phost : n->target;
    int same = strcmp(name, n->peer) == 0;
    cn_fail(n, "cannot connect to %s%s%s%s%s: %s", n->phost ? "the proxy " : "",
            name, same ? "" : " (", same ? "" : n->peer, same ? "" : ")",
            strerror(err));
    return;
  }
  cn_try_next_address(n);
}

void cn_on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  cnet *n = req->data;
  n->dns_pending = 0;
  if (n->ended) {
    if (res) {
      uv_freeaddrinfo(res);
    }
    n->handles--;
    cn_release(n);
    return;
  }
  n->handles--;
  const char *name = n->phost ? n->phost : n->host;
  if (status != 0) {
    cn_fail(n, "cannot resolve %s%s: %s", n->phost ? "the proxy " : "", name,
            uv_strerror(status));
    return;
  }
  n->addrs = n->next_addr = res;
  cn_try_next_address(n);
}
