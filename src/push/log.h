/* log.h - the push server's log: one line per event, `key=value` pairs, to
 * stderr.
 *
 * A log line must never be forged by what a peer sends. Two rules make
 * sure of it:
 *   - every value that a peer controls (a token's `sub`, an Origin header,
 *     a reason or a name it gave) is written through push_log_esc(), inside
 *     double quotes, so a quote or a backslash cannot end the value early;
 *   - push__log() escapes every control byte of the finished line, so no
 *     value, escaped or not, can start a new line.
 */
#ifndef HERALD_PUSH_LOG_H
#define HERALD_PUSH_LOG_H

#include <stddef.h>

enum { PUSH_LOG_DEBUG, PUSH_LOG_INFO, PUSH_LOG_WARN, PUSH_LOG_ERROR };

/* Lines below this level are not formatted at all. */
extern int push_log_level;

/* Writes one line: "ts=... level=... " then fmt, control bytes escaped as
 * \xNN, then '\n', in one write(2). A line longer than PUSH_LOG_LINE_MAX is
 * cut and ends with "...". */
#define PUSH_LOG_LINE_MAX 4096
void push__log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define push_log(lvl, ...)                                                     \
  do {                                                                         \
    if ((lvl) >= push_log_level) {                                             \
      push__log((lvl), __VA_ARGS__);                                           \
    }                                                                          \
  } while (0)

/* Escapes the n bytes at s for use inside a quoted log value: '"' and '\'
 * get a backslash, bytes below 0x20 and 0x7f become \xNN, and the rest is
 * copied. The result is cut (ending in "...") to fit cap, which must be at
 * least 4, and is always NUL-terminated. Returns out, for use as a printf
 * argument. s may be NULL when n is 0. */
const char *push_log_esc(char *out, size_t cap, const char *s, size_t n);

/* Room for an escaped value of a typical field (a user id, an Origin). */
#define PUSH_LOG_VAL 512

#endif
