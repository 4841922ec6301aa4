/* log.c - the push server's log lines (log.h has the rules). */
#include "push/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int push_log_level = PUSH_LOG_INFO;

static const char hex[] = "0123456789abcdef";

/* Appends the escape of byte ch (or ch itself) at out[*o], if it fits in
 * cap - 1 bytes. quote: escape '"' and '\' too. Returns 0, or -1 when it
 * did not fit. */
static int put_esc(char *out, size_t cap, size_t *o, unsigned char ch,
                   int quote) {
  char tmp[4];
  size_t k = 0;
  if (ch < 0x20 || ch == 0x7f) {
    tmp[k++] = '\\';
    tmp[k++] = 'x';
    tmp[k++] = hex[ch >> 4];
    tmp[k++] = hex[ch & 15];
  } else if (quote && (ch == '"' || ch == '\\')) {
    tmp[k++] = '\\';
    tmp[k++] = (char)ch;
  } else {
    tmp[k++] = (char)ch;
  }
  if (*o + k + 1 > cap) {
    return -1;
  }
  memcpy(out + *o, tmp, k);
  *o += k;
  return 0;
}

const char *push_log_esc(char *out, size_t cap, const char *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (put_esc(out, cap - 3, &o, (unsigned char)s[i], 1) != 0) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
  }
  out[o] = 0;
  return out;
}

void push__log(int level, const char *fmt, ...) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  char raw[PUSH_LOG_LINE_MAX], line[PUSH_LOG_LINE_MAX + 8];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm tm;
  gmtime_r(&now.tv_sec, &tm);
  char ts[32];
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  int head = snprintf(line, sizeof(line), "ts=%s.%03ldZ level=%s ", ts,
                      now.tv_nsec / 1000000,
                      names[level < 0   ? 0
                            : level > 3 ? 3
                                        : level]);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(raw, sizeof(raw), fmt, ap);
  va_end(ap);
  if (n < 0) {
    return;
  }
  size_t len = (size_t)n < sizeof(raw) ? (size_t)n : sizeof(raw) - 1;
  size_t o = (size_t)head;
  int cut = (size_t)n >= sizeof(raw);
  for (size_t i = 0; i < len && !cut; i++) {
    /* Only control bytes: quoting is the caller's (push_log_esc). */
    cut = put_esc(line, sizeof(line) - 4, &o, (unsigned char)raw[i], 0) != 0;
  }
  if (cut) {
    memcpy(line + o, "...", 3);
    o += 3;
  }
  line[o++] = '\n';
  /* One write per line, so lines of several threads never interleave. */
  ssize_t w = write(STDERR_FILENO, line, o);
  (void)w;
}
