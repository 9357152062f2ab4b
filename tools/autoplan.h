// --split auto for run: plan the cut, then re-plan between tokens.
#ifndef EDGELLM_TOOLS_AUTOPLAN_H
#define EDGELLM_TOOLS_AUTOPLAN_H

#include "common.h"
#include "edgellm/plan.h"

typedef struct {
    tool_split *ts;
    el_profile dev, edge;  // device times include --device-slowdown
    el_link_profile last_link;
    double predicted_s;    // predicted per-token latency of the current cut
    int moves;
} tool_auto;

el_status tool_auto_init(tool_auto *a, tool_split *ts, const el_model *m, el_pool *pool, int ctx, el_error *err);
void tool_auto_free(tool_auto *a);
// Probes the link and plans; moves the cut when the gain is worth it (always
// on the initial call). tokens[0..n_pos) are the positions processed so far.
el_status tool_auto_replan(tool_auto *a, el_pipeline *p, const int *tokens, int n_pos, int initial, el_error *err);

#endif
