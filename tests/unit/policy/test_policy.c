/* RBAC decision table: default deny, union of roles, scope narrowing, MFA, IP ranges, patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "policy/policy.h"

static char *clin_models[] = {"med-large", "llama-*"};
static char *desk_models[] = {"scheduler"};
static char *emb_models[] = {"embed-small"};
static wd_cidr_t office[1];

static wd_role_t roles[4];

static int setup(void **state)
{
    (void)state;
    assert_int_equal(wd_cidr_parse("10.1.0.0/16", 11, &office[0], NULL, 0), WD_OK);
    roles[0] = (wd_role_t){"clinician", clin_models, 2, WD_EP_CHAT | WD_EP_COMPLETIONS | WD_EP_MODELS, true, false,
                           NULL, 0};
    roles[1] = (wd_role_t){"front-desk", desk_models, 1, WD_EP_CHAT | WD_EP_MODELS, false, false, office, 1};
    roles[2] = (wd_role_t){"embedder", emb_models, 1, WD_EP_EMBEDDINGS, false, false, NULL, 0};
    roles[3] = (wd_role_t){"admin", NULL, 0, 0, true, true, NULL, 0};
    return 0;
}

static bool decide(const char *const *r, size_t nr, bool mfa, uint32_t ep, const char *model, const char *ip,
                   wd_decision_t *d)
{
    wd_principal_t p = {"key", "k1", r, nr, mfa, NULL, 0, NULL, 0};
    return wd_policy_decide(roles, 4, &p, ep, model, model ? strlen(model) : 0, ip, d);
}

static void test_default_deny(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *none[] = {"no-such-role"};
    assert_false(decide(none, 1, true, WD_EP_CHAT, "med-large", "10.1.2.3", &d));
    assert_int_equal(d.status, 403);
    assert_string_equal(d.code, "no_role");
    assert_false(decide(NULL, 0, true, WD_EP_CHAT, "med-large", "10.1.2.3", &d));
    assert_string_equal(d.code, "no_role");
}

static void test_models_and_patterns(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *desk[] = {"front-desk"};
    assert_true(decide(desk, 1, false, WD_EP_CHAT, "scheduler", "10.1.9.9", &d));
    assert_false(decide(desk, 1, false, WD_EP_CHAT, "med-large", "10.1.9.9", &d));
    assert_string_equal(d.code, "model_not_permitted");
    assert_non_null(strstr(d.reason, "med-large"));
    const char *clin[] = {"clinician"};
    assert_true(decide(clin, 1, true, WD_EP_CHAT, "llama-3.1-70b", "1.2.3.4", &d));
    assert_false(decide(clin, 1, true, WD_EP_CHAT, "llama", "1.2.3.4", &d)); /* "llama-*" needs the dash */
    assert_false(decide(clin, 1, true, WD_EP_CHAT, "med-large2", "1.2.3.4", &d));
}

static void test_endpoints(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *desk[] = {"front-desk"};
    assert_false(decide(desk, 1, false, WD_EP_COMPLETIONS, "scheduler", "10.1.0.1", &d));
    assert_string_equal(d.code, "endpoint_not_permitted");
    assert_true(decide(desk, 1, false, WD_EP_MODELS, NULL, "10.1.0.1", &d));
}

static void test_mfa(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *clin[] = {"clinician"};
    assert_false(decide(clin, 1, false, WD_EP_CHAT, "med-large", "1.2.3.4", &d));
    assert_string_equal(d.code, "mfa_required");
    assert_string_equal(d.rule, "role:clinician:require_mfa");
    assert_true(decide(clin, 1, true, WD_EP_CHAT, "med-large", "1.2.3.4", &d));
}

static void test_ip_ranges(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *desk[] = {"front-desk"};
    assert_false(decide(desk, 1, false, WD_EP_CHAT, "scheduler", "10.2.0.1", &d));
    assert_string_equal(d.code, "ip_not_permitted");
    assert_true(decide(desk, 1, false, WD_EP_CHAT, "scheduler", "::ffff:10.1.0.7", &d));
    assert_false(decide(desk, 1, false, WD_EP_CHAT, "scheduler", "::1", &d));
}

static void test_union_of_roles(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *both[] = {"front-desk", "embedder"};
    assert_true(decide(both, 2, false, WD_EP_EMBEDDINGS, "embed-small", "8.8.8.8", &d));
    assert_true(decide(both, 2, false, WD_EP_CHAT, "scheduler", "10.1.1.1", &d));
    assert_false(decide(both, 2, false, WD_EP_CHAT, "embed-small", "10.1.1.1", &d));
}

static void test_scope_narrows_never_widens(void **state)
{
    (void)state;
    wd_decision_t d;
    const char *clin[] = {"clinician"};
    const char *scope[] = {"llama-3.1-8b", "not-granted-by-role"};
    wd_principal_t p = {"token", "user:a", clin, 1, true, scope, 2, NULL, 0};
    assert_true(wd_policy_decide(roles, 4, &p, WD_EP_CHAT, "llama-3.1-8b", 12, "1.1.1.1", &d));
    assert_false(wd_policy_decide(roles, 4, &p, WD_EP_CHAT, "med-large", 9, "1.1.1.1", &d));
    assert_string_equal(d.rule, "token-scope:models");
    /* a scope naming a model its roles do not grant does not grant it */
    assert_false(wd_policy_decide(roles, 4, &p, WD_EP_CHAT, "not-granted-by-role", 19, "1.1.1.1", &d));
    assert_string_equal(d.code, "model_not_permitted");
    wd_cidr_t lo;
    assert_int_equal(wd_cidr_parse("127.0.0.0/8", 11, &lo, NULL, 0), WD_OK);
    wd_principal_t q = {"key", "k", clin, 1, true, NULL, 0, &lo, 1};
    assert_false(wd_policy_decide(roles, 4, &q, WD_EP_CHAT, "med-large", 9, "10.0.0.1", &d));
    assert_string_equal(d.rule, "key-scope:ips");
    assert_true(wd_policy_decide(roles, 4, &q, WD_EP_CHAT, "med-large", 9, "127.0.0.2", &d));
}

static void test_admin_and_visibility(void **state)
{
    (void)state;
    const char *adm[] = {"admin"};
    wd_principal_t p = {"token", "user:root", adm, 1, false, NULL, 0, NULL, 0};
    assert_false(wd_policy_is_admin(roles, 4, &p, "127.0.0.1"));
    p.mfa = true;
    assert_true(wd_policy_is_admin(roles, 4, &p, "127.0.0.1"));
    const char *desk[] = {"front-desk"};
    wd_principal_t q = {"key", "k", desk, 1, false, NULL, 0, NULL, 0};
    assert_false(wd_policy_is_admin(roles, 4, &q, "10.1.0.1"));
    assert_true(wd_policy_model_visible(roles, 4, &q, "scheduler", "10.1.0.1"));
    assert_false(wd_policy_model_visible(roles, 4, &q, "med-large", "10.1.0.1"));
}

static void test_cidr_parse(void **state)
{
    (void)state;
    wd_cidr_t c;
    char err[128];
    assert_int_equal(wd_cidr_parse("192.168.0.0/16", 14, &c, err, sizeof err), WD_OK);
    assert_int_equal(wd_cidr_parse("192.168.0.1/16", 14, &c, err, sizeof err), WD_EINVAL); /* host bits */
    assert_int_equal(wd_cidr_parse("10.0.0.0/33", 11, &c, err, sizeof err), WD_EINVAL);
    assert_int_equal(wd_cidr_parse("10.0.0.0/", 9, &c, err, sizeof err), WD_EINVAL);
    assert_int_equal(wd_cidr_parse("10.0.0.0/-1", 11, &c, err, sizeof err), WD_EINVAL);
    assert_int_equal(wd_cidr_parse("nonsense", 8, &c, err, sizeof err), WD_EINVAL);
    assert_int_equal(wd_cidr_parse("2001:db8::/32", 13, &c, err, sizeof err), WD_OK);
    assert_true(wd_cidr_match(&c, "2001:db8:1::5"));
    assert_false(wd_cidr_match(&c, "2001:db9::5"));
    assert_int_equal(wd_cidr_parse("0.0.0.0/0", 9, &c, err, sizeof err), WD_OK);
    assert_true(wd_cidr_match(&c, "203.0.113.9"));
    assert_int_equal(wd_cidr_parse("10.0.0.7", 8, &c, err, sizeof err), WD_OK);
    assert_true(wd_cidr_match(&c, "10.0.0.7"));
    assert_false(wd_cidr_match(&c, "10.0.0.8"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_deny),      cmocka_unit_test(test_models_and_patterns),
        cmocka_unit_test(test_endpoints),         cmocka_unit_test(test_mfa),
        cmocka_unit_test(test_ip_ranges),         cmocka_unit_test(test_union_of_roles),
        cmocka_unit_test(test_scope_narrows_never_widens), cmocka_unit_test(test_admin_and_visibility),
        cmocka_unit_test(test_cidr_parse),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
