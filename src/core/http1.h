/* http1.h - bounded, incremental, zero-copy HTTP/1.1 head parser and the
 * RFC 6455 section 4 handshake checks built on it. Internal. */
#ifndef HERALD_HTTP1_H
#define HERALD_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#include "herald/core.h"

/* Result of a parse: > 0 the head's length (through CRLF CRLF);
 * 0 incomplete, call again with more bytes. Errors are negative herald_err:
 * HERALD_ERR_HTTP (malformed: answer 400) or HERALD_ERR_HEAD_TOO_BIG (over
 * max_head_bytes or max_headers: answer 431). *reason (never NULL on error)
 * is a short static text.
 *
 * buf/len: everything received so far, from the head's first byte. last_len:
 * the len of the previous call that returned 0 (0 on the first call); bytes
 * before it are not scanned again for the end of the head, so byte-at-a-time
 * input costs O(n) overall. The head must end with CRLF CRLF; lines end with
 * CRLF (a bare LF is malformed). Obsolete line folding is malformed.
 * Header names are RFC 9110 tokens; values may hold HTAB, SP, VCHAR and
 * obs-text, never other control characters. Whitespace around values is
 * trimmed. headers[] has room for max_headers entries; the spans in *req and
 * headers[] point into buf. Only fields listed as "filled for every request"
 * are set by the parser (plus method/target/path/query/version/headers/
 * nheaders/head_len); websocket/key/protocols/extensions are left zero.
 *
 * Body framing (RFC 9112 section 6.3) is checked too, and refused as
 * HERALD_ERR_HTTP: more than one Content-Length line (even with equal
 * values), a Content-Length that is not 1*DIGIT within 64 bits,
 * Transfer-Encoding with Content-Length, and any Transfer-Encoding at all
 * (chunked bodies are refused). So a parsed request's content_length is
 * empty or a valid herald_http_content_length value. */
int herald__http_parse_request(const char *buf, size_t len, size_t last_len,
                               size_t max_head_bytes, herald_request *req,
                               herald_header *headers, size_t max_headers,
                               const char **reason);

/* The same for a response head ("HTTP/1.1 101 Switching Protocols"); fills
 * status, reason, version_minor, headers, nheaders, head_len only. The
 * framing checks are the same except that Transfer-Encoding alone is
 * accepted (the client reads no response body). */
int herald__http_parse_response(const char *buf, size_t len, size_t last_len,
                                size_t max_head_bytes, herald_response *resp,
                                herald_header *headers, size_t max_headers,
                                const char **reason);

/*
 * Server side, RFC 6455 4.2.1. Decides what req is:
 *   returns 0: not a WebSocket upgrade (no Upgrade header naming
 *              "websocket"): a plain HTTP request; req->websocket = 0.
 *   returns 1: a valid upgrade; sets req->websocket = 1 and fills key,
 *              protocols, extensions.
 *   returns an HTTP status (400, 426): an upgrade attempt that is invalid;
 *              *reason says why. 426 means Sec-WebSocket-Version was not 13,
 *              and the refusal must carry "Sec-WebSocket-Version: 13".
 * Checks: method GET, HTTP/1.1 or later, Host present and single,
 * Upgrade contains the token "websocket" (any case), Connection contains the
 * token "upgrade" (any case), exactly one Sec-WebSocket-Key which is base64 of
 * exactly 16 bytes, Sec-WebSocket-Version exactly "13", no request body
 * (Content-Length absent or 0). Also fills host,
 * origin and content_length for every request. */
int herald__hs_check_request(herald_request *req, const char **reason);

/*
 * Client side, RFC 6455 4.1 (the steps after the response head). key is the
 * base64 key we sent (24 chars). offered/noffered: the subprotocols we
 * offered. Checks: status 101, Upgrade websocket, Connection upgrade,
 * Sec-WebSocket-Accept equal to the expected value, Sec-WebSocket-Protocol
 * absent or exactly one of the offered ones (and absent when none offered),
 * Sec-WebSocket-Extensions absent (until an extension is offered; the
 * caller passes allow_extensions=1 once it validates them itself). Fills
 * resp->protocol and resp->extensions. Returns 0 or -1 with *reason set. */
int herald__hs_check_response(herald_response *resp, const char *key,
                              const char *const *offered, size_t noffered,
                              int allow_extensions, const char **reason);

/* Returns the standard reason phrase for status ("Bad Request"), or
 * "Error" for a status it does not know. */
const char *herald__http_status_text(int status);

#endif
