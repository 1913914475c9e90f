#include "audit/admin_event.h"

static int kv(wd_buf_t *o, const char *k, const char *v)
{
    int rc = wd_buf_printf(o, ",\"%s\":\"", k);
    if (!rc) rc = wd_buf_append_json_str(o, v, strlen(v));
    if (!rc) rc = wd_buf_append(o, "\"", 1);
    return rc;
}

int wd_event_admin_to_json(uint64_t wall_ms, const char *actor, const char *action, const char *target,
                           const char *outcome, const char *detail, wd_buf_t *out)
{
    if (!actor || !action || !outcome) return WD_EINVAL;
    char ts[32];
    wd_format_rfc3339(wall_ms, ts);
    size_t before = out->len;
    int rc = wd_buf_printf(out, "{\"ts\":\"%s\",\"type\":\"admin\"", ts);
    if (!rc) rc = kv(out, "actor", actor);
    if (!rc) rc = kv(out, "action", action);
    if (!rc) rc = kv(out, "target", target ? target : "");
    if (!rc) rc = kv(out, "outcome", outcome);
    if (!rc && detail) rc = kv(out, "detail", detail);
    if (!rc) rc = wd_buf_append(out, "}\n", 2);
    if (rc) out->len = before; /* never leave half a line behind */
    return rc;
}

int wd_event_admin(wd_event_writer_t *w, const char *actor, const char *action, const char *target,
                   const char *outcome, const char *detail)
{
    return wd_event_admin_to_json(wd_wall_ms(), actor, action, target, outcome, detail, &w->buf);
}
