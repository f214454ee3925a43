/* cp_clip_cpu.c — the CLIP text tower's forward pass on the CPU (see cp_clip.h for shapes).
 *
 * Pre-LN residual blocks: x += Wo·attn(LN1(x)); x += W2·act(W1·LN2(x)). Activations live in one arena per runner
 * (x, h: (T, W); big: (T, max(3W, F))), sized for at most `tok_cap` packed tokens; longer batches run in chunks.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model/cp_clip.h"
#include "base/cp_common.h"

struct cp_clip_cpu {
    const cp_clip_model *m;
    pthread_mutex_t lock;
    int64_t tok_cap;       /* most packed tokens per chunk */
    int64_t arena_tokens;  /* tokens the arena currently holds room for */
    float *arena;          /* x | h | big */
    int64_t *seg;          /* start[tok_cap] | len[tok_cap] | pool[tok_cap] (pool: EOT index per prompt) */
    size_t arena_bytes;
};

int cp_clip_cpu_create(const cp_clip_model *m, cp_clip_cpu **out) {
    *out = NULL;
    cp_clip_cpu *r = calloc(1, sizeof *r);
    if (!r) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    r->m = m;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        CP_FAIL(CP_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    r->tok_cap = cp_arena_tok_cap(m->cfg.width, m->cfg.ffn, m->cfg.context);
    *out = r;
    return CP_OK;
}

void cp_clip_cpu_free(cp_clip_cpu *r) {
    if (r == NULL) return;
    pthread_mutex_destroy(&r->lock);
    cp_free_aligned(r->arena);
    free(r->seg);
    free(r);
}

size_t cp_clip_cpu_arena_bytes(const cp_clip_cpu *r) { return r->arena_bytes; }

/* Grows the arena (once per new maximum) to hold T tokens. */
static int arena_reserve(cp_clip_cpu *r, int64_t T) {
    return cp_arena_reserve(T, r->m->cfg.width, r->m->cfg.ffn, &r->arena, &r->seg, &r->arena_tokens, &r->arena_bytes);
}

int cp_clip_check_ids(const cp_clip_config *c, const int32_t *ids, int64_t B, int64_t L) {
    if (L <= 0 || L > c->context)
        CP_FAIL(CP_ERR_INVALID_ARG, "token ids have %lld columns; this model takes at most %lld", (long long)L,
                (long long)c->context);
    for (int64_t i = 0; i < B * L; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            CP_FAIL(CP_ERR_INVALID_ARG, "token id %d at [%lld, %lld] is outside the vocabulary (0..%lld)", ids[i],
                    (long long)(i / L), (long long)(i % L), (long long)c->vocab_size - 1);
    return CP_OK;
}

/* Runs `nlayers` blocks over T packed tokens (segments start/len), x (T, W) already embedded. */
static void run_blocks(const cp_clip_model *m, float *x, float *h, float *big, int64_t T, const int64_t *start,
                       const int64_t *len, int64_t nseg, int64_t nlayers) {
    const cp_clip_config *c = &m->cfg;
    const int64_t W = c->width, F = c->ffn, H = c->heads, dh = W / H;
    for (int64_t l = 0; l < nlayers; l++) {
        const cp_clip_layer *Ly = &m->w.layers[l];
        cp_layernorm(x, W, h, W, T, W, Ly->ln1_g, Ly->ln1_b, c->ln_eps);
        if (Ly->qkv_fused) {
            cp_linear(h, W, T, W, Ly->q_w, CP_W_OUT_IN, 3 * W, Ly->q_b, big, 3 * W, 0);
        } else {
            cp_linear(h, W, T, W, Ly->q_w, CP_W_OUT_IN, W, Ly->q_b, big, 3 * W, 0);
            cp_linear(h, W, T, W, Ly->k_w, CP_W_OUT_IN, W, Ly->k_b, big + W, 3 * W, 0);
            cp_linear(h, W, T, W, Ly->v_w, CP_W_OUT_IN, W, Ly->v_b, big + 2 * W, 3 * W, 0);
        }
        cp_attention(big, 3 * W, h, W, start, len, nseg, H, dh, 1);
        cp_linear(h, W, T, W, Ly->o_w, CP_W_OUT_IN, W, Ly->o_b, x, W, 1);
        cp_layernorm(x, W, h, W, T, W, Ly->ln2_g, Ly->ln2_b, c->ln_eps);
        cp_linear(h, W, T, W, Ly->fc1_w, CP_W_OUT_IN, F, Ly->fc1_b, big, F, 0);
        cp_activation(big, T * F, c->act);
        cp_linear(big, F, T, F, Ly->fc2_w, CP_W_OUT_IN, W, Ly->fc2_b, x, W, 1);
    }
}

/* x[t] = tok_emb[id] + pos_emb[p] for the packed segments. */
static void embed(const cp_clip_model *m, const int32_t *ids, int64_t L, const int64_t *start, const int64_t *len,
                  int64_t nseg, float *x) {
    const int64_t W = m->cfg.width;
    for (int64_t s = 0; s < nseg; s++)
        for (int64_t p = 0; p < len[s]; p++) {
            const float *te = m->w.tok_emb + (int64_t)ids[s * L + p] * W, *pe = m->w.pos_emb + p * W;
            float *o = x + (start[s] + p) * W;
            for (int64_t j = 0; j < W; j++) o[j] = te[j] + pe[j];
        }
}

int cp_clip_cpu_encode(cp_clip_cpu *r, const int32_t *ids, int64_t B, int64_t L, int normalize, float *out) {
    const cp_clip_model *m = r->m;
    const cp_clip_config *c = &m->cfg;
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_clip_check_ids(c, ids, B, L));
    const int64_t W = c->width, D = c->proj_dim > 0 ? c->proj_dim : W;
    pthread_mutex_lock(&r->lock);
    int rc = CP_OK;
    int64_t b0 = 0;
    while (b0 < B && rc == CP_OK) {
        /* as many prompts as fit in tok_cap tokens, each only up to its EOT (causal: later tokens cannot matter) */
        int64_t T = 0, b1 = b0;
        int64_t *pos = NULL;
        while (b1 < B) {
            int64_t p;
            cp_clip_pool_positions(c, ids + b1 * L, 1, L, &p);
            if (T + p + 1 > r->tok_cap && b1 > b0) break;
            T += p + 1;
            b1++;
        }
        const int64_t nseg = b1 - b0;
        rc = arena_reserve(r, T > nseg ? T : nseg);
        if (rc) break;
        int64_t *start = r->seg, *len = r->seg + r->arena_tokens;
        pos = r->seg + 2 * r->arena_tokens;
        const int64_t big_w = 3 * W > c->ffn ? 3 * W : c->ffn;
        float *x = r->arena, *h = x + r->arena_tokens * W, *big = h + r->arena_tokens * W;
        (void)big_w;
        int64_t t = 0;
        for (int64_t s = 0; s < nseg; s++) {
            cp_clip_pool_positions(c, ids + (b0 + s) * L, 1, L, &pos[s]);
            start[s] = t, len[s] = pos[s] + 1;
            t += len[s];
        }
        embed(m, ids + b0 * L, L, start, len, nseg, x);
        run_blocks(m, x, h, big, T, start, len, nseg, c->layers);
        /* final LayerNorm on the pooled rows only, then the projection straight into out */
        for (int64_t s = 0; s < nseg; s++)
            cp_layernorm(x + (start[s] + len[s] - 1) * W, W, h + s * W, W, 1, W, m->w.lnf_g, m->w.lnf_b, c->ln_eps);
        float *o = out + b0 * D;
        if (m->w.proj)
            cp_linear(h, W, nseg, W, m->w.proj, m->w.proj_layout, D, NULL, o, D, 0);
        else
            memcpy(o, h, (size_t)(nseg * W) * sizeof(float));
        if (normalize) cp_l2_normalize_rows(o, nseg, D);
        b0 = b1;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int cp_clip_cpu_hidden_states(cp_clip_cpu *r, const int32_t *ids, int64_t B, int64_t L, int layer, float *out) {
    const cp_clip_model *m = r->m;
    const cp_clip_config *c = &m->cfg;
    const int64_t NL = c->layers;
    int64_t nrun = layer >= 0 ? layer : NL + 1 + layer;
    if (nrun < 0 || nrun > NL)
        CP_FAIL(CP_ERR_INVALID_ARG, "layer %d out of range for a %lld-layer model (use -%lld..%lld)", layer,
                (long long)NL, (long long)NL + 1, (long long)NL);
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_clip_check_ids(c, ids, B, L));
    const int64_t W = c->width;
    pthread_mutex_lock(&r->lock);
    int rc = CP_OK;
    const int64_t per = r->tok_cap / L > 0 ? r->tok_cap / L : 1;
    for (int64_t b0 = 0; b0 < B && rc == CP_OK; b0 += per) {
        const int64_t nseg = B - b0 < per ? B - b0 : per, T = nseg * L;
        rc = arena_reserve(r, T);
        if (rc) break;
        int64_t *start = r->seg, *len = r->seg + r->arena_tokens;
        float *x = r->arena, *h = x + r->arena_tokens * W, *big = h + r->arena_tokens * W;
        for (int64_t s = 0; s < nseg; s++) start[s] = s * L, len[s] = L;
        embed(m, ids + b0 * L, L, start, len, nseg, x);
        run_blocks(m, x, h, big, T, start, len, nseg, nrun);
        cp_layernorm(x, W, out + b0 * L * W, W, T, W, m->w.lnf_g, m->w.lnf_b, c->ln_eps);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}
