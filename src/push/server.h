/* server.h - `herald serve`: the server that binds the push modules
 * (push.h) to the runtime, configured by a push_config (config.h). */
#ifndef HERALD_PUSH_SERVER_H
#define HERALD_PUSH_SERVER_H

#include "push/config.h"

/* Runs the server until SIGINT/SIGTERM; returns the process exit status. */
int push_server_main(push_config *c);

#endif
