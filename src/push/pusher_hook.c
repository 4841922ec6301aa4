/* pusher_hook.c - Pusher's webhooks (placeholder until the shared webhook
 * sender is merged). */
#include "push/pusher_int.h"

void pusher_hook_channel(pusher_app *app, int occupied, const char *channel) {
  push_log(PUSH_LOG_DEBUG, "ev=pusher_hook app=%s name=%s channel=%s",
           app->cfg->id, occupied ? "channel_occupied" : "channel_vacated",
           channel);
}
