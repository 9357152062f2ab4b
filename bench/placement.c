// Placement on simulated edge networks: hit ratio of trim (TrimCaching,
// shared blocks counted once) against independent caching (models counted
// whole) and the paper's greedy alone (trim-plain), swept over the storage
// per server, the number of models and the degree of sharing; several seeds
// per cell, the same instances for every algorithm. Times are per solve, in
// this process, so their ratios hold on a loaded machine.
// Built and run by bench/placement.sh.
#include <stdio.h>
#include <stdlib.h>

#include "edgellm/place.h"

int main(int argc, char **argv) {
    int seeds = argc > 1 ? atoi(argv[1]) : 5;
    if (seeds < 1 || seeds > 100) {
        fprintf(stderr, "usage: %s [SEEDS (1..100, default 5)]\n", argv[0]);
        return 2;
    }
    const double storage[] = {1, 1.5, 2, 3, 5};
    const int models[] = {15, 30, 60};
    const double sharing[] = {0, 0.5, 0.9};
    printf("10 servers, 100 users, models from 3 bases of 16 blocks (~64 MiB each), Zipf 0.8, reach radius 0.3; "
           "%d seeds per row\n\n", seeds);
    printf("| storage (x model) | models | sharing | trim | independent | trim / indep. | trim-plain | "
           "trim ms | indep. ms |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    double t_start = el_time_s();
    int rows = 0, n_rows = 5 * 3 * 3;
    for (int mi = 0; mi < 3; mi++)
        for (int fi = 0; fi < 3; fi++)
            for (int si = 0; si < 5; si++) {
                double hit[3] = {0}, ms[3] = {0};
                for (int seed = 1; seed <= seeds; seed++) {
                    el_place_sim s = el_place_sim_defaults();
                    s.models = models[mi], s.sharing = sharing[fi], s.storage = storage[si];
                    el_place_problem *p;
                    el_error e;
                    if (el_place_simulate(&s, (uint64_t)seed, &p, &e)) {
                        fprintf(stderr, "%s\n", e.msg);
                        return 1;
                    }
                    const el_place_algo algos[3] = {EL_PLACE_TRIM, EL_PLACE_INDEPENDENT, EL_PLACE_TRIM_PLAIN};
                    for (int a = 0; a < 3; a++) {
                        el_placement pl;
                        double t0 = el_time_s();
                        if (el_place_solve(p, algos[a], &pl, &e)) {
                            fprintf(stderr, "%s\n", e.msg);
                            return 1;
                        }
                        ms[a] += (el_time_s() - t0) * 1e3;
                        hit[a] += pl.hit_ratio;
                        el_placement_free(&pl);
                    }
                    el_place_problem_free(p);
                }
                for (int a = 0; a < 3; a++) hit[a] /= seeds, ms[a] /= seeds;
                char ratio[32];
                if (hit[1] > 0)
                    snprintf(ratio, sizeof ratio, "%.2f", hit[0] / hit[1]);
                else
                    snprintf(ratio, sizeof ratio, "%s", hit[0] > 0 ? "inf" : "-");
                printf("| %.1f | %d | %.1f | %.3f | %.3f | %s | %.3f | %.2f | %.2f |\n", storage[si], models[mi],
                       sharing[fi], hit[0], hit[1], ratio, hit[2], ms[0], ms[1]);
                rows++;
                double el = el_time_s() - t_start;
                fprintf(stderr, "\rplacement: %d/%d rows, %.1f rows/s, ETA %.0f s   ", rows, n_rows, rows / el,
                        (n_rows - rows) * el / rows);
            }
    fprintf(stderr, "\n");
    return 0;
}
