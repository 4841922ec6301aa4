/* utf8.h - incremental, fail-fast UTF-8 validation (RFC 3629). Internal. */
#ifndef HERALD_UTF8_H
#define HERALD_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Validator state carried between chunks of one message. 0 means "at a
 * character boundary"; any other value means a multi-byte sequence is open.
 * Start every message at 0. */
#define HERALD_UTF8_ACCEPT 0u

/*
 * Validates p[0..n) as the continuation of a UTF-8 stream whose state is
 * *state. Fail-fast: returns -1 as soon as the bytes seen so far cannot be the
 * prefix of any valid UTF-8 text (for example F4 90, ED A0, E0 80, C0, F5),
 * even when the offending sequence is incomplete at the end of the chunk.
 * Returns 0 otherwise and updates *state (HERALD_UTF8_ACCEPT when the chunk
 * ended on a character boundary). On -1 *state is unspecified.
 * Uses AVX2 when the CPU has it (chosen once at run time), else a scalar
 * state machine with an 8/16-byte ASCII skip.
 */
int herald__utf8_validate(uint32_t *state, const uint8_t *p, size_t n);

#endif
