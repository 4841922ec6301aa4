/* client_listen.c - `herald client --listen`: one listening socket, the
 * first connection accepted (later ones find the port closed), and its
 * opening handshake answered as a server. */
#include "app/client_net_int.h"

void cn_on_accept(cnet *n) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  int fd = accept4(n->lfd, (struct sockaddr *)&ss, &sl,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    return; /* EAGAIN, or the peer left already */
  }
  if (n->poll != NULL) {
    close(fd); /* one at a time: a handshake is in progress */
    return;
  }
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
    port = ntohs(s->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
    port = ntohs(s->sin6_port);
  }
  snprintf(n->peer, sizeof(n->peer), "%s:%d", ip, port);
  snprintf(n->target, sizeof(n->target), "%s", n->peer);
  cn_vlog(n, "connection from %s", n->peer);
  if (cn_poll_open(n, &n->poll, fd) != 0) {
    close(fd);
    return;
  }
  uv_poll_stop(n->lpoll);
  n->fd = fd;
  n->poll_events = 0;
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  cn_poll_set(n, UV_READABLE);
}

/* Binds [ADDR:]PORT (ADDR defaults to 127.0.0.1). Returns 0, or -1 after
 * writing why into n->error. */
int cn_start_listen(cnet *n, const char *spec) {
  char host[INET6_ADDRSTRLEN + 2] = "127.0.0.1";
  const char *ps = spec;
  const char *colon = strrchr(spec, ':');
  if (colon != NULL) {
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
      spec++;
      hl -= 2;
    }
    if (hl >= sizeof(host)) {
      snprintf(n->error, sizeof(n->error),
               "--listen: the address '%.*s' is "
               "too long",
               (int)hl, spec);
      return -1;
    }
    if (hl > 0) {
      memcpy(host, spec, hl);
      host[hl] = 0;
    }
    ps = colon + 1;
  }
  char *end;
  long port = strtol(ps, &end, 10);
  if (*ps < '0' || *ps > '9' || *end != 0 || port < 0 || port > 65535) {
    snprintf(n->error, sizeof(n->error),
             "--listen: the port '%s' is not a number from 0 to 65535", ps);
    return -1;
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t sl;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) == 0) {
    sl = sizeof(struct sockaddr_in);
  } else if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) == 0) {
    sl = sizeof(struct sockaddr_in6);
  } else {
    snprintf(n->error, sizeof(n->error),
             "--listen: '%s' is not an IPv4 or IPv6 address", host);
    return -1;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 8) != 0) {
    snprintf(n->error, sizeof(n->error),
             "--listen: cannot listen on %s:%ld: %s", host, port,
             strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  sl = sizeof(ss);
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  char ip[INET6_ADDRSTRLEN] = "?";
  int bound = 0;
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
    bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  } else {
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip,
              sizeof(ip));
    bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  n->lfd = fd;
  if (cn_poll_open(n, &n->lpoll, fd) != 0) {
    snprintf(n->error, sizeof(n->error), "out of memory");
    close(fd);
    n->lfd = -1;
    return -1;
  }
  uv_poll_start(n->lpoll, UV_READABLE, cn_on_poll);
  n->state = N_LISTEN;
  /* Scripts wait for this line (with port 0 it names the real port). */
  fprintf(stderr, "herald client: listening on %s%s%s:%d\n",
          ss.ss_family == AF_INET6 ? "[" : "", ip,
          ss.ss_family == AF_INET6 ? "]" : "", bound);
  fflush(stderr);
  return 0;
}
