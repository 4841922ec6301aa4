/* client_io.c - how `herald client` prints messages and cuts stdin into
 * messages.
 *
 * Output: a text message is written as it is, followed by a newline. On a
 * terminal each message gets the marker "< " and the lines after its first
 * are indented by two spaces, so that a message holding "a\nb" cannot be
 * taken for two. A binary message is written raw (and then without a
 * newline: the bytes are the output), or as hex or base64 on one line.
 * --pretty indents text that parses as JSON (cJSON); --timestamps puts the
 * local time of arrival first.
 *
 * Input: lines (the default), the whole of stdin, fixed-size chunks, or
 * messages each behind a 4-byte big-endian length. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "app/client.h"

/* ---- stdout ------------------------------------------------------------- */

/* Writes all of buf to fd 1. stdout may share a non-blocking file
 * description with stdin (a terminal, a socket), so EAGAIN waits in poll()
 * rather than losing output. Returns 0 or -1 (errno set). */
static int write_all(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, buf, len);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};
        (void)poll(&p, 1, -1);
        continue;
      }
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* A growing output buffer; on allocation failure it stops growing and
 * `failed` is set (the message is then not printed). */
typedef struct obuf {
  char *p;
  size_t len, cap;
  int failed;
} obuf;

static void put(obuf *b, const void *data, size_t len) {
  if (b->failed) {
    return;
  }
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + len) {
      cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
      b->failed = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, len);
  b->len += len;
}

static void puts_(obuf *b, const char *s) {
  put(b, s, strlen(s));
}

/* The timestamp and marker of a line of output. */
static void prefix(const cout *out, obuf *b, const char *marker) {
  if (out->timestamps) {
    struct timeval tv;
    struct tm tm;
    char ts[32];
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03d ", (int)(tv.tv_usec / 1000));
    puts_(b, ts);
  }
  if (out->markers) {
    puts_(b, marker);
  }
}

/* Text, with every line after the first indented on a terminal; leading
 * tabs (cJSON's indentation) become two spaces each. */
static void put_text(const cout *out, obuf *b, const char *p, size_t len,
                     int detab) {
  int line_start = 1;
  for (size_t i = 0; i < len; i++) {
    if (detab && p[i] == '\t') {
      /* cJSON indents with tabs and puts one after each colon; JSON text
       * holds no raw tab of its own (RFC 8259 7), so each is layout. */
      puts_(b, line_start ? "  " : " ");
      continue;
    }
    line_start = 0;
    put(b, &p[i], 1);
    if (p[i] == '\n') {
      line_start = 1;
      if (out->markers && i + 1 < len) {
        puts_(b, "  ");
      }
    }
  }
}

static int flush_obuf(cout *out, obuf *b) {
  int rv = 0;
  if (b->failed) {
    fprintf(stderr, "herald client: out of memory printing a message\n");
  } else if (write_all(b->p, b->len) != 0) {
    if (!out->broken) {
      fprintf(stderr, "herald client: stdout: %s\n", strerror(errno));
    }
    out->broken = 1;
    rv = -1;
  }
  free(b->p);
  return rv;
}

size_t client_base64(const uint8_t *in, size_t inlen, char *out) {
  size_t n = 0;
  /* EVP_EncodeBlock takes an int length: encode in slices of 3 * 2^20. */
  while (inlen > 0) {
    size_t take = inlen > 3u << 20 ? 3u << 20 : inlen;
    n += (size_t)EVP_EncodeBlock((unsigned char *)out + n, in, (int)take);
    in += take;
    inlen -= take;
  }
  out[n] = 0;
  return n;
}

int cout_message(cout *out, herald_opcode op, const uint8_t *data, size_t len) {
  if (out->broken) {
    return -1;
  }
  obuf b = {0};
  if (op == HERALD_OP_TEXT) {
    prefix(out, &b, "< ");
    cJSON *j = NULL;
    char *pretty = NULL;
    if (out->pretty && len > 0 &&
        (j = cJSON_ParseWithLength((const char *)data, len)) != NULL) {
      pretty = cJSON_Print(j);
      cJSON_Delete(j);
    }
    if (pretty) {
      put_text(out, &b, pretty, strlen(pretty), 1);
      cJSON_free(pretty);
    } else {
      put_text(out, &b, (const char *)data, len, 0);
    }
    put(&b, "\n", 1);
    return flush_obuf(out, &b);
  }
  switch (out->bin) {
  case COUT_RAW:
    if (out->markers || out->timestamps) {
      /* A terminal: say what follows, and end the line after it. */
      prefix(out, &b, "< ");
      char h[48];
      snprintf(h, sizeof(h), "[binary, %zu bytes] ", len);
      puts_(&b, h);
      put(&b, data, len);
      put(&b, "\n", 1);
    } else {
      put(&b, data, len); /* the bytes themselves, nothing added */
    }
    break;
  case COUT_HEX: {
    static const char digits[] = "0123456789abcdef";
    prefix(out, &b, "< ");
    for (size_t i = 0; i < len; i++) {
      char x[2] = {digits[data[i] >> 4], digits[data[i] & 15]};
      put(&b, x, 2);
    }
    put(&b, "\n", 1);
    break;
  }
  case COUT_BASE64: {
    prefix(out, &b, "< ");
    char *s = malloc(4 * (len / 3 + 1) + 1);
    if (s == NULL) {
      b.failed = 1;
      break;
    }
    size_t n = client_base64(data, len, s);
    put(&b, s, n);
    free(s);
    put(&b, "\n", 1);
    break;
  }
  }
  return flush_obuf(out, &b);
}

int cout_note(cout *out, const char *fmt, ...) {
  if (out->broken) {
    return -1;
  }
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  obuf b = {0};
  prefix(out, &b, "< ");
  puts_(&b, line);
  put(&b, "\n", 1);
  return flush_obuf(out, &b);
}

/* ---- stdin -------------------------------------------------------------- */

static int keep(cin *in, const uint8_t *data, size_t len) {
  if (in->len + len > in->cap) {
    size_t cap = in->cap ? in->cap : 4096;
    while (cap < in->len + len) {
      cap *= 2;
    }
    uint8_t *p = realloc(in->buf, cap);
    if (p == NULL) {
      return -1;
    }
    in->buf = p;
    in->cap = cap;
  }
  memcpy(in->buf + in->len, data, len);
  in->len += len;
  return 0;
}

static void too_long(cin *in, const char *what) {
  if (!in->failed) {
    fprintf(stderr,
            "herald client: %s is longer than --max-message (%llu bytes); "
            "it is not sent\n",
            what, (unsigned long long)in->max);
  }
  in->failed = 1;
}

static void feed_lines(cin *in, const uint8_t *data, size_t len, cin_emit emit,
                       void *ud) {
  while (len > 0) {
    const uint8_t *nl = memchr(data, '\n', len);
    size_t n = nl ? (size_t)(nl - data) : len;
    if (nl == NULL) {
      if (in->len + n > in->max) {
        too_long(in, "a line");
        in->len = 0;
      } else if (keep(in, data, n) != 0) {
        too_long(in, "a line (out of memory)");
        in->len = 0;
      }
      return;
    }
    if (in->len == 0) {
      emit(ud, data, n); /* a whole line in this read: no copy */
    } else if (in->len + n <= in->max && keep(in, data, n) == 0) {
      emit(ud, in->buf, in->len);
      in->len = 0;
    } else {
      too_long(in, "a line");
      in->len = 0;
    }
    data = nl + 1;
    len -= n + 1;
  }
}

static void feed_chunks(cin *in, const uint8_t *data, size_t len, cin_emit emit,
                        void *ud) {
  while (len > 0) {
    if (in->len == 0 && len >= in->chunk) {
      emit(ud, data, (size_t)in->chunk);
      data += in->chunk;
      len -= (size_t)in->chunk;
      continue;
    }
    size_t take = (size_t)in->chunk - in->len;
    if (take > len) {
      take = len;
    }
    if (keep(in, data, take) != 0) {
      too_long(in, "a chunk (out of memory)");
      return;
    }
    data += take;
    len -= take;
    if (in->len == in->chunk) {
      emit(ud, in->buf, in->len);
      in->len = 0;
    }
  }
}

static void feed_prefixed(cin *in, const uint8_t *data, size_t len,
                          cin_emit emit, void *ud) {
  if (keep(in, data, len) != 0) {
    too_long(in, "a message (out of memory)");
    in->len = 0;
    return;
  }
  size_t off = 0;
  while (in->len - off >= 4) {
    const uint8_t *p = in->buf + off;
    uint64_t n = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 |
                 (uint64_t)p[2] << 8 | p[3];
    if (n > in->max) {
      too_long(in, "a length-prefixed message");
      /* The stream cannot be resynchronised: drop the rest. */
      in->len = 0;
      return;
    }
    if (in->len - off - 4 < n) {
      break;
    }
    emit(ud, p + 4, (size_t)n);
    off += 4 + (size_t)n;
  }
  memmove(in->buf, in->buf + off, in->len - off);
  in->len -= off;
}

void cin_feed(cin *in, const uint8_t *data, size_t len, cin_emit emit,
              void *ud) {
  switch (in->mode) {
  case CIN_LINES:
    feed_lines(in, data, len, emit, ud);
    break;
  case CIN_WHOLE:
    if (in->len + len > in->max) {
      too_long(in, "stdin");
    } else if (!in->failed && keep(in, data, len) != 0) {
      too_long(in, "stdin (out of memory)");
    }
    break;
  case CIN_CHUNKS:
    feed_chunks(in, data, len, emit, ud);
    break;
  case CIN_PREFIX:
    feed_prefixed(in, data, len, emit, ud);
    break;
  }
}

int cin_end(cin *in, cin_emit emit, void *ud) {
  int rv = 0;
  switch (in->mode) {
  case CIN_LINES:
  case CIN_CHUNKS:
    if (in->len > 0) {
      emit(ud, in->buf, in->len);
    }
    break;
  case CIN_WHOLE:
    if (!in->failed) {
      emit(ud, in->buf ? in->buf : (const uint8_t *)"", in->len);
    }
    break;
  case CIN_PREFIX:
    if (in->len > 0) {
      fprintf(stderr,
              "herald client: stdin ended inside a length-prefixed message "
              "(%zu bytes left over)\n",
              in->len);
      rv = -1;
    }
    break;
  }
  in->len = 0;
  return rv;
}

void cin_free(cin *in) {
  free(in->buf);
  in->buf = NULL;
  in->len = in->cap = 0;
}
