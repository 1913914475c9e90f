/* audit/admin_event: records of operator and admin-API actions (key created, user disabled, token
 * revoked, ...) written through the same JSON-lines sink as request events, so one file holds both.
 * An admin event names who acted, what they did and to what — never a secret: a key's public id,
 * a user's name, a token's jti. */
#ifndef WD_AUDIT_ADMIN_EVENT_H
#define WD_AUDIT_ADMIN_EVENT_H

#include "audit/event.h"

/* One line: {"ts":…,"type":"admin","actor":…,"action":…,"target":…,"outcome":…[,"detail":…]}.
 * actor is e.g. "cli:alice" or "key:<id>"; action "key.create", "user.disable", …; outcome "ok" or
 * "failed"; detail (may be NULL) a short secret-free note. Appends to out. */
int wd_event_admin_to_json(uint64_t wall_ms, const char *actor, const char *action, const char *target,
                           const char *outcome, const char *detail, wd_buf_t *out);

/* Buffers the event in w like wd_event_emit (a no-op when the sink is off); call wd_event_flush to
 * write it out now. */
int wd_event_admin(wd_event_writer_t *w, const char *actor, const char *action, const char *target,
                   const char *outcome, const char *detail);

#endif
