/* The activation-patching grids: grid.h. */
#include "grid.h"

static const cx_patch_kind KINDS[] = {
    [CIRCUITS_PATCH_RESID_PRE] = {HK_RESID_PRE, G_LAYER_POS, "resid_pre"},
    [CIRCUITS_PATCH_RESID_MID] = {HK_RESID_MID, G_LAYER_POS, "resid_mid"},
    [CIRCUITS_PATCH_RESID_POST] = {HK_RESID_POST, G_LAYER_POS, "resid_post"},
    [CIRCUITS_PATCH_ATTN_OUT] = {HK_ATTN_OUT, G_LAYER_POS, "attn_out"},
    [CIRCUITS_PATCH_MLP_OUT] = {HK_MLP_OUT, G_LAYER_POS, "mlp_out"},
    [CIRCUITS_PATCH_HEAD_Z_BY_POS] = {HK_Z, G_LAYER_POS_HEAD, "z"},
    [CIRCUITS_PATCH_HEAD_Q_BY_POS] = {HK_Q, G_LAYER_POS_HEAD, "q"},
    [CIRCUITS_PATCH_HEAD_K_BY_POS] = {HK_K, G_LAYER_POS_HEAD, "k"},
    [CIRCUITS_PATCH_HEAD_V_BY_POS] = {HK_V, G_LAYER_POS_HEAD, "v"},
    [CIRCUITS_PATCH_HEAD_PATTERN_BY_POS] = {HK_PATTERN, G_LAYER_HEAD_DEST, "pattern"},
    [CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC] = {HK_PATTERN, G_LAYER_HEAD_DEST_SRC, "pattern"},
    [CIRCUITS_PATCH_HEAD_Z_ALL_POS] = {HK_Z, G_LAYER_HEAD, "z"},
    [CIRCUITS_PATCH_HEAD_Q_ALL_POS] = {HK_Q, G_LAYER_HEAD, "q"},
    [CIRCUITS_PATCH_HEAD_K_ALL_POS] = {HK_K, G_LAYER_HEAD, "k"},
    [CIRCUITS_PATCH_HEAD_V_ALL_POS] = {HK_V, G_LAYER_HEAD, "v"},
    [CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS] = {HK_PATTERN, G_LAYER_HEAD, "pattern"},
};

const cx_patch_kind *cx_patch_kind_of(int32_t kind)
{
    return kind >= 0 && kind < (int32_t)CX_COUNT(KINDS) ? &KINDS[kind] : NULL;
}

int64_t cx_grid_heads(const circuits_config *c, int32_t kind)
{
    cx_hook_kind h = KINDS[kind].hook;
    return h == HK_K || h == HK_V ? c->n_key_value_heads : c->n_heads;
}

int64_t cx_grid_cells(const circuits_model *m, int32_t kind, int64_t T, cx_grid_cell *cells)
{
    const circuits_config *cf = &m->cfg;
    cx_grid g = KINDS[kind].grid;
    bool pattern = KINDS[kind].hook == HK_PATTERN;
    int64_t H = cx_grid_heads(cf, kind), dh = cf->d_head, n = 0;
    int64_t np = g == G_LAYER_HEAD ? 1 : T, nh = g == G_LAYER_POS ? 1 : H, ns = g == G_LAYER_HEAD_DEST_SRC ? T : 1;
    bool head_major = g == G_LAYER_HEAD_DEST || g == G_LAYER_HEAD_DEST_SRC;
    for (int32_t l = 0; l < cf->n_layers; l++)
        for (int64_t i = 0; i < (head_major ? nh : np); i++)
            for (int64_t j = 0; j < (head_major ? np : nh); j++)
                for (int64_t k = 0; k < ns; k++) {
                    cx_grid_cell c = {.layer = l, .pattern = pattern, .src = k};
                    c.head = head_major ? i : j;
                    c.pos = g == G_LAYER_HEAD ? 0 : head_major ? j : i;
                    /* positions: every one (all-pos grids), else the cell's */
                    c.t0 = c.pos;
                    c.t1 = g == G_LAYER_HEAD ? T : c.pos + 1;
                    if (pattern) { /* the source axis: all of it, or one source position */
                        c.lo = g == G_LAYER_HEAD_DEST_SRC ? k : 0;
                        c.hi = g == G_LAYER_HEAD_DEST_SRC ? k + 1 : T;
                    } else if (g == G_LAYER_POS) { /* the whole row: resid / attn_out / mlp_out [d_model] */
                        c.lo = 0;
                        c.hi = cf->d_model;
                    } else { /* one head's d_head values of [H, d_head] */
                        c.lo = c.head * dh;
                        c.hi = c.lo + dh;
                    }
                    cells[n++] = c;
                }
    return n;
}
