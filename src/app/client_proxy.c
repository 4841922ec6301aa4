/* client_proxy.c - `herald client` through an HTTP proxy (--proxy,
 * https_proxy): the CONNECT request, with Basic credentials when the proxy
 * URL has them, and the proxy's answer read up to its blank line. */
#include "app/client_net_int.h"

void cn_start_proxy(cnet *n) {
  char ua[64];
  snprintf(ua, sizeof(ua), "herald-client/%s", HERALD_VERSION_STRING);
  size_t cap = strlen(n->host) + strlen(ua) + 2 * 300 +
               (n->pauth ? strlen(n->pauth) : 0) + 128;
  n->raw = malloc(cap);
  if (n->raw == NULL) {
    cn_fail(n, "out of memory");
    return;
  }
  int is6 = strchr(n->host, ':') != NULL;
  char authority[300];
  snprintf(authority, sizeof(authority), "%s%s%s:%d", is6 ? "[" : "", n->host,
           is6 ? "]" : "", n->port);
  int len = snprintf(n->raw, cap,
                     "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n"
                     "%s%s%s\r\n",
                     authority, authority, ua,
                     n->pauth ? "Proxy-Authorization: " : "",
                     n->pauth ? n->pauth : "", n->pauth ? "\r\n" : "");
  n->rawlen = (size_t)len;
  n->rawoff = 0;
  n->state = N_PROXY;
  cn_vhead(n, "> ", n->raw, n->rawlen);
  cn_flush(n);
}

/* The proxy's answer is in ibuf. Returns 1 when more is needed. */
int cn_proxy_answer(cnet *n) {
  char *end = memmem(n->ibuf, n->ilen, "\r\n\r\n", 4);
  if (end == NULL) {
    if (n->ilen >= PROXY_HEAD_MAX) {
      cn_fail(n, "the proxy %s:%d sent a head over %d bytes", n->phost,
              n->pport, PROXY_HEAD_MAX);
    }
    return 1;
  }
  size_t hl = (size_t)(end - (char *)n->ibuf) + 4;
  cn_vhead(n, "< ", (const char *)n->ibuf, hl);
  const char *p = (const char *)n->ibuf;
  size_t ll = strcspn(p, "\r\n");
  int status = 0;
  if (ll >= 12 && strncmp(p, "HTTP/1.", 7) == 0) {
    status = atoi(p + 9);
  }
  if (status < 200 || status > 299) {
    if (status == 0) {
      cn_fail(n, "the proxy %s:%d did not answer CONNECT in HTTP", n->phost,
              n->pport);
    } else {
      cn_fail(n, "the proxy %s:%d refused CONNECT %s: %.*s%s", n->phost,
              n->pport, n->target, (int)(ll > 9 ? ll - 9 : 0), p + 9,
              status == 407 ? " (give user:password@ in the proxy URL)" : "");
    }
    return 0;
  }
  memmove(n->ibuf, n->ibuf + hl, n->ilen - hl);
  n->ilen -= hl;
  free(n->raw);
  n->raw = NULL;
  n->rawlen = n->rawoff = 0;
  cn_vlog(n, "tunnel to %s open through the proxy", n->target);
  if (n->tls) {
    cn_start_tls(n);
  } else {
    cn_start_handshake(n);
  }
  return 0;
}
