/* raw_echo.c - the baseline for bench/compare: the least work a WebSocket
 * echo server can do, on one thread with epoll.
 *
 * What it does, exactly:
 *   - accepts on 127.0.0.1:PORT (level-triggered epoll, TCP_NODELAY);
 *   - collects the HTTP request until "\r\n\r\n", takes Sec-WebSocket-Key,
 *     and answers 101 with Sec-WebSocket-Accept (SHA-1 + base64 below); it
 *     checks nothing else in the request;
 *   - then, per readable socket: one read() of up to 256 KiB into a shared
 *     buffer, frames parsed as a stream (a frame may span reads: the header
 *     is reassembled, the payload is passed through as it arrives), each
 *     client frame answered by a server frame with the same FIN bit, opcode
 *     and length, its payload unmasked into the output buffer; then one
 *     write() of that output. Output the kernel does not take is kept and
 *     written on EPOLLOUT (reads stop meanwhile).
 *   - a close frame is echoed and the connection closed after the write.
 * It does not validate UTF-8, reserved bits, control frame rules, message
 * sizes or fragmentation sequences, and it does not answer pings with
 * pongs (it echoes them as pings). It is no conformant server: it is what a
 * server costs before doing what RFC 6455 requires of it.
 *
 * usage: raw_echo PORT   (prints "listening on 127.0.0.1:PORT"; 0 = any) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE (256 * 1024)
#define MAX_HEAD 8192

/* ---- SHA-1 (FIPS 180-4), enough for Sec-WebSocket-Accept --------------- */

static uint32_t rol(uint32_t x, unsigned n) {
  return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t *p) {
  uint32_t w[80];
  for (int i = 0; i < 16; i++) {
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  }
  for (int i = 16; i < 80; i++) {
    w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) {
      f = (b & c) | (~b & d);
      k = 0x5A827999;
    } else if (i < 40) {
      f = b ^ c ^ d;
      k = 0x6ED9EBA1;
    } else if (i < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8F1BBCDC;
    } else {
      f = b ^ c ^ d;
      k = 0xCA62C1D6;
    }
    uint32_t t = rol(a, 5) + f + e + k + w[i];
    e = d;
    d = c;
    c = rol(b, 30);
    b = a;
    a = t;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

/* in: at most 119 bytes (two blocks with padding). */
static void sha1_short(const uint8_t *in, size_t len, uint8_t out[20]) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  uint8_t buf[128] = {0};
  memcpy(buf, in, len);
  buf[len] = 0x80;
  size_t total = len + 9 <= 64 ? 64 : 128;
  uint64_t bits = (uint64_t)len * 8;
  for (int i = 0; i < 8; i++) {
    buf[total - 1 - i] = (uint8_t)(bits >> (8 * i));
  }
  for (size_t off = 0; off < total; off += 64) {
    sha1_block(h, buf + off);
  }
  for (int i = 0; i < 5; i++) {
    out[4 * i] = (uint8_t)(h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(h[i] >> 8);
    out[4 * i + 3] = (uint8_t)h[i];
  }
}

static void base64(const uint8_t *in, size_t len, char *out) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < len) {
      v |= (uint32_t)in[i + 1] << 8;
    }
    if (i + 2 < len) {
      v |= in[i + 2];
    }
    out[o++] = tab[(v >> 18) & 63];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < len ? tab[v & 63] : '=';
  }
  out[o] = 0;
}

/* ---- connections -------------------------------------------------------- */

struct conn {
  int fd;
  int upgraded;
  int closing; /* close frame echoed: close once written */
  /* handshake */
  char *head;
  size_t headlen;
  /* frame parser */
  uint8_t hdr[14];
  size_t hdrlen;   /* header bytes collected */
  uint64_t remain; /* payload bytes of the current frame still to come */
  uint8_t mask[4];
  unsigned maskoff;
  int in_payload;
  uint8_t opcode;
  /* output not yet written */
  uint8_t *out;
  size_t outlen, outcap;
};

static int epfd;
static uint8_t *rbuf;
static uint8_t *obuf; /* output of one read, before the write */
static size_t ocap;

static int out_reserve(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap) {
    return 0;
  }
  size_t n = *cap ? *cap : 4096;
  while (n < need) {
    n *= 2;
  }
  uint8_t *p = realloc(*buf, n);
  if (p == NULL) {
    return -1;
  }
  *buf = p;
  *cap = n;
  return 0;
}

static void conn_close(struct conn *c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->head);
  free(c->out);
  free(c);
}

static void set_events(struct conn *c, uint32_t ev) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes obuf[0..n): what the kernel does not take is kept in c->out. */
static int conn_write(struct conn *c, const uint8_t *p, size_t n) {
  ssize_t w = n ? write(c->fd, p, n) : 0;
  if (w < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      return -1;
    }
    w = 0;
  }
  if ((size_t)w < n) {
    if (out_reserve(&c->out, &c->outcap, n - (size_t)w) != 0) {
      return -1;
    }
    memcpy(c->out, p + w, n - (size_t)w);
    c->outlen = n - (size_t)w;
    set_events(c, EPOLLOUT);
    return 0;
  }
  return c->closing ? -1 : 0;
}

static int handshake(struct conn *c, const uint8_t *in, size_t n) {
  if (c->headlen + n > MAX_HEAD) {
    return -1;
  }
  char *h = realloc(c->head, c->headlen + n + 1);
  if (h == NULL) {
    return -1;
  }
  c->head = h;
  memcpy(h + c->headlen, in, n);
  c->headlen += n;
  h[c->headlen] = 0;
  char *end = strstr(h, "\r\n\r\n");
  if (end == NULL) {
    return 0;
  }
  /* Frames may follow the request in the same read: not supported (a
   * client waits for the 101 before it sends). */
  char *k = strcasestr(h, "\r\nSec-WebSocket-Key:");
  if (k == NULL) {
    return -1;
  }
  k += 20;
  while (*k == ' ') {
    k++;
  }
  char *ke = strstr(k, "\r\n");
  size_t klen = (size_t)(ke - k);
  while (klen && k[klen - 1] == ' ') {
    klen--;
  }
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  uint8_t cat[128], dig[20];
  if (klen + sizeof(guid) - 1 > 119) {
    return -1;
  }
  memcpy(cat, k, klen);
  memcpy(cat + klen, guid, sizeof(guid) - 1);
  sha1_short(cat, klen + sizeof(guid) - 1, dig);
  char acc[32];
  base64(dig, 20, acc);
  char resp[256];
  int rl = snprintf(resp, sizeof(resp),
                    "HTTP/1.1 101 Switching Protocols\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Accept: %s\r\n\r\n",
                    acc);
  free(c->head);
  c->head = NULL;
  c->headlen = 0;
  c->upgraded = 1;
  return conn_write(c, (const uint8_t *)resp, (size_t)rl);
}

/* out[j] = in[j] ^ key[(off + j) % 4], eight bytes at a time. */
static void unmask(uint8_t *out, const uint8_t *in, size_t n,
                   const uint8_t key[4], unsigned off) {
  uint8_t k8[8];
  for (int j = 0; j < 8; j++) {
    k8[j] = key[(off + (unsigned)j) & 3];
  }
  uint64_t k;
  memcpy(&k, k8, 8);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    uint64_t w;
    memcpy(&w, in + j, 8);
    w ^= k;
    memcpy(out + j, &w, 8);
  }
  for (; j < n; j++) {
    out[j] = in[j] ^ k8[j & 7];
  }
}

/* Turns client frames in in[0..n) into server frames in obuf. Returns the
 * output length, or -1. */
static long reframe(struct conn *c, const uint8_t *in, size_t n) {
  size_t o = 0, i = 0;
  if (out_reserve(&obuf, &ocap, n + 16) != 0) {
    return -1;
  }
  while (i < n) {
    if (!c->in_payload) {
      c->hdr[c->hdrlen++] = in[i++];
      if (c->hdrlen < 2) {
        continue;
      }
      unsigned len7 = c->hdr[1] & 0x7f;
      size_t need = 2 +
                    (len7 == 126   ? 2
                     : len7 == 127 ? 8
                                   : 0) +
                    ((c->hdr[1] & 0x80) ? 4 : 0);
      if (c->hdrlen < need) {
        continue;
      }
      uint64_t len = len7;
      size_t p = 2;
      if (len7 == 126) {
        len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
        p = 4;
      } else if (len7 == 127) {
        len = 0;
        for (int b = 0; b < 8; b++) {
          len = len << 8 | c->hdr[2 + b];
        }
        p = 10;
      }
      if (c->hdr[1] & 0x80) {
        memcpy(c->mask, c->hdr + p, 4);
      } else {
        memset(c->mask, 0, 4);
      }
      /* The server frame: same first byte, no mask bit. */
      obuf[o++] = c->hdr[0];
      obuf[o++] = (uint8_t)len7;
      memcpy(obuf + o, c->hdr + 2, p - 2);
      o += p - 2;
      c->opcode = c->hdr[0] & 0x0f;
      c->remain = len;
      c->maskoff = 0;
      c->hdrlen = 0;
      c->in_payload = len > 0;
      if (c->opcode == 8 && len == 0) {
        c->closing = 1;
      }
      continue;
    }
    size_t take = n - i;
    if (take > c->remain) {
      take = (size_t)c->remain;
    }
    unmask(obuf + o, in + i, take, c->mask, c->maskoff);
    unsigned m = c->maskoff;
    c->maskoff = (unsigned)((m + take) & 3);
    o += take;
    i += take;
    c->remain -= take;
    if (c->remain == 0) {
      c->in_payload = 0;
      if (c->opcode == 8) {
        c->closing = 1;
      }
    }
  }
  return (long)o;
}

static void on_readable(struct conn *c) {
  ssize_t n = read(c->fd, rbuf, RBUF_SIZE);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    }
    conn_close(c);
    return;
  }
  if (!c->upgraded) {
    if (handshake(c, rbuf, (size_t)n) != 0) {
      conn_close(c);
    }
    return;
  }
  long o = reframe(c, rbuf, (size_t)n);
  if (o < 0 || conn_write(c, obuf, (size_t)o) != 0) {
    conn_close(c);
  }
}

static void on_writable(struct conn *c) {
  ssize_t w = write(c->fd, c->out, c->outlen);
  if (w < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      conn_close(c);
    }
    return;
  }
  memmove(c->out, c->out + w, c->outlen - (size_t)w);
  c->outlen -= (size_t)w;
  if (c->outlen == 0) {
    if (c->closing) {
      conn_close(c);
      return;
    }
    set_events(c, EPOLLIN);
  }
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 9002;
  signal(SIGPIPE, SIG_IGN);
  rbuf = malloc(RBUF_SIZE);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (rbuf == NULL || lfd < 0 ||
      bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      listen(lfd, 1024) != 0) {
    perror("raw_echo: listen");
    return 1;
  }
  socklen_t sl = sizeof(sa);
  getsockname(lfd, (struct sockaddr *)&sa, &sl);
  printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
  fflush(stdout);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(epfd, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) {
            break;
          }
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          c = calloc(1, sizeof(*c));
          if (c == NULL) {
            close(fd);
            continue;
          }
          c->fd = fd;
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      if (evs[i].events & EPOLLOUT) {
        on_writable(c);
      } else {
        on_readable(c);
      }
    }
  }
}
