// Unit tests for src/place: hand-made instances with known optima, random
// small instances (trim >= independent, storage respected with shared blocks
// counted once, exact >= trim, trim >= 0.9 exact), exact's size cap and the
// loaders' errors.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/place.h"
#include "testutil.h"

static el_status parse3(const char *cat, const char *srv, const char *usr, el_place_problem **p, el_error *e) {
    return el_place_parse(cat, strlen(cat), "catalog.json", srv, strlen(srv), "servers.json", usr, strlen(usr),
                          "users.json", p, e);
}

// {"hash": "<64 hex of id>", "bytes": n}
static void blk(char *out, size_t cap, const char *name, int id, unsigned bytes) {
    snprintf(out, cap, "{\"name\": \"%s\", \"hash\": \"%064x\", \"bytes\": %u}", name, id, bytes);
}

// A model with a 1-byte manifest and header of its own and the given blocks (id, bytes).
static void model(char *out, size_t cap, const char *name, int own_id, const int *ids, const unsigned *bytes, int n) {
    char man[160], hdr[160], b[160];
    blk(man, sizeof man, "manifest", own_id, 1);
    blk(hdr, sizeof hdr, "header", own_id + 1, 1);
    size_t len = (size_t)snprintf(out, cap, "{\"name\": \"%s\", \"id\": \"%064x\", \"manifest\": %s, \"header\": %s, "
                                  "\"blocks\": [", name, own_id, man, hdr);
    for (int i = 0; i < n; i++) {
        blk(b, sizeof b, "t", ids[i], bytes[i]);
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? ", " : "", b);
    }
    snprintf(out + len, cap - len, "]}");
}

// Three models: A1 and A2 share a 100-byte base block (each adds 10 bytes of
// its own), C is 105 bytes alone; with manifests and headers A1 and A2 are
// 112 bytes each, 124 together, C 107.
static char catalog3[4096];
static void make_catalog3(void) {
    char a1[1024], a2[1024], c[1024];
    int ia1[] = {1000, 1001}, ia2[] = {1000, 1002}, ic[] = {1003};
    unsigned ba1[] = {100, 10}, ba2[] = {100, 10}, bc[] = {105};
    model(a1, sizeof a1, "A1", 10, ia1, ba1, 2);
    model(a2, sizeof a2, "A2", 20, ia2, ba2, 2);
    model(c, sizeof c, "C", 30, ic, bc, 1);
    snprintf(catalog3, sizeof catalog3, "{\"models\": [%s, %s, %s], \"shared\": [], \"total_bytes\": 331}", a1, a2, c);
}

static const char *servers2 = "[{\"name\": \"s0\", \"storage_bytes\": 125}, {\"name\": \"s1\", \"storage_bytes\": 125}]";
static const char *users2 = "[{\"name\": \"u0\", \"reach\": [\"s0\"], \"requests\": {\"A1\": 0.4, \"A2\": 0.4}},"
                            " {\"name\": \"u1\", \"reach\": [\"s1\"], \"requests\": {\"C\": 0.5, \"A1\": 0.5}}]";

static int holds(const el_place_problem *p, const el_placement *pl, const char *server, const char *model) {
    for (int s = 0; s < p->n_servers; s++)
        for (int m = 0; m < p->n_models; m++)
            if (!strcmp(p->servers[s].name, server) && !strcmp(p->models[m].name, model))
                return pl->x[(size_t)s * p->n_models + m];
    return -1;
}

// The union of a server's blocks, computed apart from the library.
static uint64_t union_bytes(const el_place_problem *p, const el_placement *pl, int s) {
    uint8_t *seen = calloc((size_t)p->n_blocks + 1, 1);
    uint64_t b = 0;
    for (int m = 0; m < p->n_models; m++) {
        if (!pl->x[(size_t)s * p->n_models + m]) continue;
        for (int k = 0; k < p->models[m].n_blocks; k++)
            if (!seen[p->models[m].blocks[k]]++) b += p->block_bytes[p->models[m].blocks[k]];
    }
    free(seen);
    return b;
}

static void assert_within_storage(const el_place_problem *p, const el_placement *pl) {
    el_error e;
    if (el_place_check(p, pl, &e)) fail_msg("%s", e.msg);
    for (int s = 0; s < p->n_servers; s++) {
        assert_true(pl->bytes_used[s] == union_bytes(p, pl, s));
        assert_true(pl->bytes_used[s] <= p->servers[s].storage_bytes);
    }
}

static void test_shared_base(void **st) {
    (void)st;
    make_catalog3();
    el_place_problem *p;
    el_error e;
    if (parse3(catalog3, servers2, users2, &p, &e)) fail_msg("%s", e.msg);
    assert_int_equal(p->n_models, 3);
    assert_int_equal(p->n_blocks, 10);  // 3 x (manifest + header) + base + a1 + a2 + c
    assert_true(p->models[0].bytes == 112 && p->models[1].bytes == 112 && p->models[2].bytes == 107);
    assert_true(fabs(p->total_p - 1.8) < 1e-12);
    el_placement t, i, x;
    assert_int_equal(el_place_solve(p, EL_PLACE_TRIM, &t, &e), EL_OK);
    assert_int_equal(el_place_solve(p, EL_PLACE_INDEPENDENT, &i, &e), EL_OK);
    assert_int_equal(el_place_solve(p, EL_PLACE_EXACT, &x, &e), EL_OK);
    // trim fits both variants on s0 (124 of 125 bytes); independent counts 224 and fits one
    assert_int_equal(holds(p, &t, "s0", "A1"), 1);
    assert_int_equal(holds(p, &t, "s0", "A2"), 1);
    assert_int_equal(holds(p, &i, "s0", "A1") + holds(p, &i, "s0", "A2"), 1);
    // s1: C and A1 serve 0.5 each, do not fit together; the tie goes to the smaller C
    assert_int_equal(holds(p, &t, "s1", "C"), 1);
    assert_int_equal(holds(p, &i, "s1", "C"), 1);
    assert_true(t.bytes_used[0] == 124 && t.bytes_used[1] == 107);
    assert_true(i.bytes_used[0] == 112 && i.bytes_used[1] == 107);
    assert_true(fabs(t.hit_ratio - 1.3 / 1.8) < 1e-12);
    assert_true(fabs(i.hit_ratio - 0.9 / 1.8) < 1e-12);
    assert_true(fabs(x.hit_ratio - 1.3 / 1.8) < 1e-12);
    assert_within_storage(p, &t);
    assert_within_storage(p, &i);
    assert_within_storage(p, &x);
    char *j = el_place_to_json(p, &t);
    assert_non_null(j);
    assert_string_equal(j, "{\"placement\": {\"s0\": [\"A1\", \"A2\"], \"s1\": [\"C\"]}, \"hit_ratio\": "
                           "0.72222222222222221, \"bytes_used\": {\"s0\": 124, \"s1\": 107}}\n");
    free(j);
    // a placement over storage is caught by the check
    t.x[2] = 1;  // s0 also holds C
    t.bytes_used[0] = union_bytes(p, &t, 0);
    assert_int_equal(el_place_check(p, &t, &e), EL_ERR_STATE);
    assert_non_null(strstr(e.msg, "server \"s0\" holds 231 bytes, over its storage of 125"));
    el_placement_free(&t);
    el_placement_free(&i);
    el_placement_free(&x);
    el_place_problem_free(p);
}

// One server of 100 bytes; X (60 bytes) serves 0.5, Y and Z (50 each) 0.45
// each, W (2 bytes) 0.05. Largest gain first takes X then W (0.55); largest
// gain per byte takes W then Y (0.5); the optimum is Y + Z (0.9). The
// single-pair starts (Y first) find it, the paper's greedy alone does not.
static void test_exact_known_optimum(void **st) {
    (void)st;
    char x[1024], y[1024], z[1024], w[1024], cat[8192];
    int ix[] = {1}, iy[] = {2}, iz[] = {3};
    unsigned bx[] = {58}, by[] = {48}, bz[] = {48};
    model(x, sizeof x, "X", 10, ix, bx, 1);
    model(y, sizeof y, "Y", 20, iy, by, 1);
    model(z, sizeof z, "Z", 30, iz, bz, 1);
    model(w, sizeof w, "W", 40, NULL, NULL, 0);
    snprintf(cat, sizeof cat, "{\"models\": [%s, %s, %s, %s]}", x, y, z, w);
    el_place_problem *p;
    el_error e;
    if (parse3(cat, "[{\"name\": \"s\", \"storage_bytes\": 100}]",
               "[{\"name\": \"u\", \"reach\": [\"s\"], \"requests\": {\"X\": 0.5, \"W\": 0.05}},"
               " {\"name\": \"v\", \"reach\": [\"s\"], \"requests\": {\"Y\": 0.45, \"Z\": 0.45}}]",
               &p, &e))
        fail_msg("%s", e.msg);
    el_placement t, pl, i, ex;
    assert_int_equal(el_place_solve(p, EL_PLACE_TRIM, &t, &e), EL_OK);
    assert_int_equal(el_place_solve(p, EL_PLACE_TRIM_PLAIN, &pl, &e), EL_OK);
    assert_int_equal(el_place_solve(p, EL_PLACE_INDEPENDENT, &i, &e), EL_OK);
    assert_int_equal(el_place_solve(p, EL_PLACE_EXACT, &ex, &e), EL_OK);
    assert_true(fabs(pl.hit_ratio - 0.55 / 1.45) < 1e-12);
    assert_int_equal(holds(p, &pl, "s", "X") + holds(p, &pl, "s", "W"), 2);
    assert_true(fabs(i.hit_ratio - 0.9 / 1.45) < 1e-12);  // nothing shared: independent searches as trim does
    assert_true(fabs(t.hit_ratio - 0.9 / 1.45) < 1e-12);
    assert_true(fabs(ex.hit_ratio - 0.9 / 1.45) < 1e-12);
    assert_int_equal(holds(p, &ex, "s", "Y") + holds(p, &ex, "s", "Z"), 2);
    assert_true(ex.bytes_used[0] == 100);
    el_placement_free(&t);
    el_placement_free(&pl);
    el_placement_free(&i);
    el_placement_free(&ex);
    el_place_problem_free(p);
}

// A small random instance: 2-4 servers of unequal storage, 3-6 models.
static el_place_problem *random_instance(uint64_t *rng, int i) {
    el_place_sim s = el_place_sim_defaults();
    s.servers = 2 + (int)(tu_rand(rng) % 3);
    s.models = 3 + (int)(tu_rand(rng) % 4);
    s.bases = 1 + (int)(tu_rand(rng) % 3);
    if (s.bases > s.models) s.bases = s.models;
    s.users = 5 + (int)(tu_rand(rng) % 11);
    s.blocks_per_model = 2 + (int)(tu_rand(rng) % 6);
    s.sharing = (double)(tu_rand(rng) % 11) / 10;
    s.storage = 0.5 + (double)(tu_rand(rng) % 26) / 10;
    s.radius = 0.3 + (double)(tu_rand(rng) % 6) / 10;
    s.zipf = (double)(tu_rand(rng) % 15) / 10;
    s.block_bytes = 1000;
    el_place_problem *p;
    el_error e;
    if (el_place_simulate(&s, (uint64_t)i + 1, &p, &e)) fail_msg("%s", e.msg);
    for (int k = 0; k < p->n_servers; k++)  // storage from 0.5x to 1.5x the common value
        p->servers[k].storage_bytes = p->servers[k].storage_bytes / 2 + tu_rand(rng) % (p->servers[k].storage_bytes + 1);
    return p;
}

static void test_random_small(void **st) {
    (void)st;
    uint64_t rng = 42;
    int extended = 0, trim_better = 0, exact_better = 0;
    for (int i = 0; i < 200; i++) {
        el_place_problem *p = random_instance(&rng, i);
        el_placement t, ind, ex;
        el_error e;
        if (el_place_solve(p, EL_PLACE_TRIM, &t, &e) || el_place_solve(p, EL_PLACE_INDEPENDENT, &ind, &e) ||
            el_place_solve(p, EL_PLACE_EXACT, &ex, &e))
            fail_msg("instance %d: %s", i, e.msg);
        assert_within_storage(p, &t);
        assert_within_storage(p, &ind);
        assert_within_storage(p, &ex);
        if (t.hit_ratio < ind.hit_ratio - 1e-12) fail_msg("instance %d: trim %.9f < independent %.9f", i, t.hit_ratio, ind.hit_ratio);
        if (ex.hit_ratio < t.hit_ratio - 1e-9) fail_msg("instance %d: exact %.9f < trim %.9f", i, ex.hit_ratio, t.hit_ratio);
        extended += t.extended;
        trim_better += t.hit_ratio > ind.hit_ratio + 1e-12;
        exact_better += ex.hit_ratio > t.hit_ratio + 1e-12;
        el_placement_free(&t);
        el_placement_free(&ind);
        el_placement_free(&ex);
        el_place_problem_free(p);
    }
    print_message("200 random instances: trim beats independent on %d, exact beats trim on %d, trim took "
                  "independent's placement extended on %d\n", trim_better, exact_better, extended);
    assert_true(trim_better > 20);  // sharing matters on these instances
}

// The evidence: on 20 fixed random small instances, trim's hit ratio
// is at least 0.9 of exact's.
static void test_trim_vs_exact(void **st) {
    (void)st;
    double sum = 0, worst = 2, psum = 0, pworst = 2;
    int worst_i = -1;
    for (int i = 0; i < 20; i++) {
        el_place_sim s = el_place_sim_defaults();
        s.servers = 3, s.users = 30, s.models = 8, s.bases = 2, s.blocks_per_model = 8;
        s.sharing = (double[]){0, 0.5, 0.9}[i % 3];
        s.storage = (double[]){1, 1.5, 2, 3}[i % 4];
        s.radius = 0.5;
        el_place_problem *p;
        el_placement t, ex, pl;
        el_error e;
        if (el_place_simulate(&s, 1000 + (uint64_t)i, &p, &e) || el_place_solve(p, EL_PLACE_TRIM, &t, &e) ||
            el_place_solve(p, EL_PLACE_EXACT, &ex, &e) || el_place_solve(p, EL_PLACE_TRIM_PLAIN, &pl, &e))
            fail_msg("instance %d: %s", i, e.msg);
        assert_true(ex.hit_ratio > 0);
        double r = t.hit_ratio / ex.hit_ratio, pr = pl.hit_ratio / ex.hit_ratio;
        psum += pr;
        if (pr < pworst) pworst = pr;
        el_placement_free(&pl);
        sum += r;
        if (r < worst) worst = r, worst_i = i;
        el_placement_free(&t);
        el_placement_free(&ex);
        el_place_problem_free(p);
    }
    print_message("trim / exact over 20 instances (3 servers, 30 users, 8 models): mean %.4f, worst %.4f (instance %d); "
                  "the paper's greedy alone (trim-plain): mean %.4f, worst %.4f\n", sum / 20, worst, worst_i, psum / 20, pworst);
    assert_true(worst >= 0.9);
}

static void test_exact_refuses_large(void **st) {
    (void)st;
    el_place_sim s = el_place_sim_defaults();  // 10 servers x 30 models
    el_place_problem *p;
    el_placement pl;
    el_error e;
    assert_int_equal(el_place_simulate(&s, 1, &p, &e), EL_OK);
    assert_int_equal(el_place_solve(p, EL_PLACE_EXACT, &pl, &e), EL_ERR_RANGE);
    assert_non_null(strstr(e.msg, "exact: 10 servers x 30 models give"));
    assert_non_null(strstr(e.msg, "over the cap of 24"));
    el_place_problem_free(p);
}

static void test_simulate(void **st) {
    (void)st;
    el_place_sim s;
    el_error e;
    assert_int_equal(el_place_sim_parse("servers=4,models=6,bases=2,blocks=10,sharing=0.8,storage=2", &s, &e), EL_OK);
    assert_int_equal(s.servers, 4);
    assert_int_equal(s.users, 100);
    el_place_problem *p, *q;
    assert_int_equal(el_place_simulate(&s, 7, &p, &e), EL_OK);
    assert_int_equal(el_place_simulate(&s, 7, &q, &e), EL_OK);
    // 2 bases x 8 shared blocks + 6 models x 2 own blocks
    assert_int_equal(p->n_blocks, 2 * 8 + 6 * 2);
    assert_int_equal(p->models[0].blocks[0], p->models[2].blocks[0]);  // same base
    assert_true(p->models[0].blocks[0] != p->models[1].blocks[0]);     // other base
    assert_true(p->models[0].blocks[9] != p->models[2].blocks[9]);     // own blocks
    for (int u = 0; u < p->n_users; u++) {
        double sum = 0;
        for (int j = 0; j < p->users[u].n_req; j++) sum += p->users[u].req_p[j];
        assert_true(fabs(sum - 1) < 1e-9 && p->users[u].n_reach >= 1);
        assert_int_equal(p->users[u].n_reach, q->users[u].n_reach);  // seeded
    }
    assert_true(p->servers[0].storage_bytes == q->servers[0].storage_bytes);
    el_place_problem_free(p);
    el_place_problem_free(q);
    assert_int_equal(el_place_sim_parse("servers=0", &s, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "servers=0"));
    assert_int_equal(el_place_sim_parse("colour=3", &s, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "unknown key 'colour'"));
}

static void expect_error(const char *cat, const char *srv, const char *usr, const char *want) {
    el_place_problem *p = NULL;
    el_error e;
    el_status s = parse3(cat, srv, usr, &p, &e);
    if (s == EL_OK) fail_msg("accepted; wanted '%s'", want);
    assert_null(p);
    if (!strstr(e.msg, want)) fail_msg("error '%s' lacks '%s'", e.msg, want);
    assert_null(strchr(e.msg, '\n'));
}

static void test_parse_errors(void **st) {
    (void)st;
    make_catalog3();
    expect_error("{\"models\": [", servers2, users2, "catalog.json:1:13:");
    expect_error(catalog3, "[{\"name\": \"s0\"}]", users2, "servers.json: server \"s0\": \"storage_bytes\" must be a whole number");
    expect_error(catalog3, "[{\"name\": \"s0\", \"storage_bytes\": -5}]", users2, "servers.json: server \"s0\": \"storage_bytes\"");
    expect_error(catalog3, "[{\"name\": \"s0\", \"storage_bytes\": 1.5}]", users2, "must be a whole number of bytes");
    expect_error(catalog3, "[{\"name\": \"s0\", \"storage_bytes\": 1}, {\"name\": \"s0\", \"storage_bytes\": 1}]", users2,
                 "servers.json: server \"s0\" is listed twice");
    expect_error(catalog3, servers2, "[{\"name\": \"u3\", \"reach\": [\"s9\"], \"requests\": {}}]",
                 "users.json: user \"u3\": reach names unknown server \"s9\"");
    expect_error(catalog3, servers2, "[{\"name\": \"u3\", \"reach\": [\"s0\"], \"requests\": {\"B7\": 0.1}}]",
                 "users.json: user \"u3\": requests unknown model \"B7\"");
    expect_error(catalog3, servers2, "[{\"name\": \"u3\", \"reach\": [\"s0\"], \"requests\": {\"A1\": -0.1}}]",
                 "users.json: user \"u3\": probability of model \"A1\" must be a number in [0, 1]");
    expect_error(catalog3, servers2, "[{\"name\": \"u3\", \"reach\": [\"s0\"], \"requests\": {\"A1\": 0.6, \"C\": 0.5}}]",
                 "users.json: user \"u3\": request probabilities sum to 1.1, more than 1");
    expect_error(catalog3, servers2, "[{\"name\": \"u3\", \"reach\": [\"s0\", \"s0\"], \"requests\": {}}]",
                 "reach names server \"s0\" twice");
    expect_error(catalog3, servers2, "{\"name\": \"u3\"}", "users.json: expected an array");
    expect_error(catalog3, servers2, "[{\"name\": \"u3\", \"reach\": \"s0\", \"requests\": {}}]", "\"reach\" must be an array");
    // catalog checks: hex, sizes, a hash with two sizes, duplicate names
    const char *h = "\"hash\": \"" "00000000000000000000000000000000000000000000000000000000000000aa" "\"";
    char cat[2048];
    snprintf(cat, sizeof cat, "{\"models\": [{\"name\": \"M\", \"manifest\": {%s, \"bytes\": 1}, \"header\": {%s, \"bytes\": 2}, \"blocks\": []}]}", h, h);
    expect_error(cat, servers2, "[]", "catalog.json: block 00000000000000000000000000000000000000000000000000000000000000aa is listed with 1 and 2 bytes");
    expect_error("{\"models\": [{\"name\": \"M\", \"manifest\": {\"hash\": \"XYZ\", \"bytes\": 1}}]}", servers2, "[]",
                 "catalog.json: model \"M\": \"manifest\": \"hash\" must be 64 lowercase hex digits");
    snprintf(cat, sizeof cat, "{\"models\": [{\"name\": \"M\", \"manifest\": {%s, \"bytes\": 1}, \"header\": {%s, \"bytes\": 1}, \"blocks\": [{\"name\": \"w\", \"hash\": \"%064d\", \"bytes\": -3}]}]}", h, h, 7);
    expect_error(cat, servers2, "[]", "catalog.json: model \"M\": block \"w\" \"bytes\" must be a whole number of bytes");
    snprintf(cat, sizeof cat, "{\"models\": [{\"name\": \"M\", \"manifest\": {%s, \"bytes\": 1}, \"header\": {%s, \"bytes\": 1}, \"blocks\": [{\"hash\": \"%064d\", \"bytes\": 1e300}]}]}", h, h, 7);
    expect_error(cat, servers2, "[]", "from 0 to 2^53");
    snprintf(cat, sizeof cat, "{\"models\": [{\"name\": \"M\", \"manifest\": {%s, \"bytes\": 1}, \"header\": {%s, \"bytes\": 1}, \"blocks\": []}, {\"name\": \"M\"}]}", h, h);
    expect_error(cat, servers2, "[]", "catalog.json: model \"M\" is listed twice");
    expect_error("{\"shared\": []}", servers2, "[]", "catalog.json: expected an object with a \"models\" array");
    expect_error("{\"models\": [{\"name\": \"\"}]}", servers2, "[]", "catalog.json: model 0: a name must be 1 to");
    // a missing file names it
    el_place_problem *p;
    el_error e;
    assert_int_equal(el_place_load("/nonexistent/catalog.json", "x", "y", &p, &e), EL_ERR_IO);
    assert_non_null(strstr(e.msg, "/nonexistent/catalog.json: cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_base),     cmocka_unit_test(test_exact_known_optimum),
        cmocka_unit_test(test_random_small),    cmocka_unit_test(test_trim_vs_exact),
        cmocka_unit_test(test_exact_refuses_large), cmocka_unit_test(test_simulate),
        cmocka_unit_test(test_parse_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
