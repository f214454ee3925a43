/* cp_runner_cpu.c — the encoder engine's CPU runner (see cp_runner_cpu.h). */
#include "model/cp_runner_cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"

struct cp_runner_cpu {
    const cp_encoder_model *m;
    pthread_mutex_t lock;
    int64_t tok_cap;      /* most packed tokens (and segments) per chunk */
    int64_t cap;          /* tokens the arena holds room for now */
    float *arena;         /* x (T, W) | h (T, W) | big (T, max(3W, F)) */
    int64_t *seg;         /* start | len | pool (T each) */
    int32_t *cols;        /* the id column of each packed token (T) */
    size_t bytes;
};

/* Most packed tokens per chunk: the float arena near 64 MiB, at most 8192, at least one longest input. */
static int64_t tok_cap_for(const cp_encoder_desc *d) {
    const int64_t W = d->width, big = 3 * W > d->ffn ? 3 * W : d->ffn;
    int64_t cap = (int64_t)(16 << 20) / (2 * W + big);
    if (cap > 8192) cap = 8192;
    return cap < d->max_len ? d->max_len : cap;
}

int cp_runner_cpu_create(const cp_encoder_model *m, cp_runner_cpu **out) {
    *out = NULL;
    cp_runner_cpu *r = calloc(1, sizeof *r);
    if (!r) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    r->m = m;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        CP_FAIL(CP_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    r->tok_cap = tok_cap_for(&m->d);
    *out = r;
    return CP_OK;
}

void cp_runner_cpu_free(cp_runner_cpu *r) {
    if (r == NULL) return;
    pthread_mutex_destroy(&r->lock);
    cp_free_aligned(r->arena);
    free(r->seg);
    free(r->cols);
    free(r);
}

size_t cp_runner_cpu_arena_bytes(const cp_runner_cpu *r) { return r->bytes; }

/* Grows the arena (once per new maximum) to hold T tokens; on failure the old arena is kept. */
static int reserve(cp_runner_cpu *r, int64_t T) {
    if (T <= r->cap) return CP_OK;
    const cp_encoder_desc *d = &r->m->d;
    const int64_t W = d->width, big = 3 * W > d->ffn ? 3 * W : d->ffn;
    size_t floats, bytes;
    CP_CHECK(cp_mul_size((size_t)T, (size_t)(2 * W + big), &floats));
    CP_CHECK(cp_mul_size(floats, sizeof(float), &bytes));
    float *a = cp_malloc_aligned(bytes);
    int64_t *s = malloc((size_t)T * 3 * sizeof(int64_t));
    int32_t *c = malloc((size_t)T * sizeof(int32_t));
    if (!a || !s || !c) {
        cp_free_aligned(a);
        free(s);
        free(c);
        CP_FAIL(CP_ERR_NOMEM, "cannot allocate the %zu-byte activation arena", bytes);
    }
    cp_free_aligned(r->arena);
    free(r->seg);
    free(r->cols);
    r->arena = a, r->seg = s, r->cols = c, r->cap = T;
    r->bytes = bytes + (size_t)T * (3 * sizeof(int64_t) + sizeof(int32_t));
    return CP_OK;
}

/* One chunk: prompts [b0, b1) packed into T tokens. */
typedef struct {
    int64_t b0, nseg, T;
    int64_t *start, *len, *pool;
    float *x, *h, *big;
} chunk;

/* Takes prompts from b0 while they fit in tok_cap tokens and segments, packs their columns. */
static int pack(cp_runner_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int64_t b0,
                int pooled, chunk *c) {
    const cp_encoder_desc *d = &r->m->d;
    int64_t T = 0, b1 = b0;
    while (b1 < B && b1 - b0 < r->tok_cap) {
        const int64_t n = cp_encoder_columns(d, ids + b1 * L, mask ? mask + b1 * L : NULL, L, pooled, NULL, NULL);
        if (T + n > r->tok_cap && b1 > b0) break;
        T += n;
        b1++;
    }
    c->b0 = b0, c->nseg = b1 - b0, c->T = T;
    CP_CHECK(reserve(r, T > c->nseg ? T : c->nseg));
    const int64_t W = d->width;
    c->start = r->seg, c->len = r->seg + r->cap, c->pool = r->seg + 2 * r->cap;
    c->x = r->arena, c->h = c->x + r->cap * W, c->big = c->h + r->cap * W;
    int64_t t = 0;
    for (int64_t s = 0; s < c->nseg; s++) {
        int64_t at = 0;
        const int64_t b = b0 + s;
        const int64_t n = cp_encoder_columns(d, ids + b * L, mask ? mask + b * L : NULL, L, pooled, r->cols + t, &at);
        c->start[s] = t, c->len[s] = n, c->pool[s] = t + at;
        t += n;
    }
    return CP_OK;
}

/* x[t] = tok[id] + pos[p] (+ type0), then the embedding LayerNorm when the model has one. */
static void embed(const cp_encoder_model *m, const int32_t *ids, int64_t L, const int32_t *cols, const chunk *c) {
    const cp_encoder_desc *d = &m->d;
    const cp_encoder_weights *w = &m->w;
    const int64_t W = d->width;
    const int direct = w->tok.type == CP_WT_F32 && w->tok.layout == CP_W_OUT_IN;
    for (int64_t s = 0; s < c->nseg; s++) {
        const int32_t *row = ids + (c->b0 + s) * L;
        for (int64_t k = 0; k < c->len[s]; k++) {
            const int64_t t = c->start[s] + k, col = cols[t];
            float *o = c->x + t * W;
            const float *pe = w->pos + cp_encoder_position(d, col, k) * W;
            if (direct) {
                const float *te = (const float *)w->tok.data + (int64_t)row[col] * W;
                if (w->type0)
                    for (int64_t j = 0; j < W; j++) o[j] = te[j] + w->type0[j] + pe[j];
                else
                    for (int64_t j = 0; j < W; j++) o[j] = te[j] + pe[j];
            } else {
                cp_wmat_row(&w->tok, row[col], o);
                if (w->type0)
                    for (int64_t j = 0; j < W; j++) o[j] = o[j] + w->type0[j] + pe[j];
                else
                    for (int64_t j = 0; j < W; j++) o[j] += pe[j];
            }
        }
    }
    if (d->emb_ln) cp_layernorm(c->x, W, c->x, W, c->T, W, w->emb_ln_g, w->emb_ln_b, d->ln_eps);
}

/* The first nrun blocks over the chunk's packed tokens. */
static void blocks(const cp_encoder_model *m, const chunk *c, int64_t nrun) {
    const cp_encoder_desc *d = &m->d;
    const int64_t W = d->width, F = d->ffn, H = d->heads, dh = W / H, T = c->T;
    float *x = c->x, *h = c->h, *big = c->big;
    for (int64_t l = 0; l < nrun; l++) {
        const cp_encoder_layer *Ly = &m->w.layers[l];
        if (d->pre_ln) {
            cp_layernorm(x, W, h, W, T, W, Ly->ln1_g, Ly->ln1_b, d->ln_eps);
            cp_matmul(h, W, T, &Ly->qkv, Ly->qkv_b, big, 3 * W, 0);
            cp_attention(big, 3 * W, h, W, c->start, c->len, c->nseg, H, dh, d->causal);
            cp_matmul(h, W, T, &Ly->o, Ly->o_b, x, W, 1);
            cp_layernorm(x, W, h, W, T, W, Ly->ln2_g, Ly->ln2_b, d->ln_eps);
            cp_matmul(h, W, T, &Ly->fc1, Ly->fc1_b, big, F, 0);
            cp_activation(big, T * F, d->act);
            cp_matmul(big, F, T, &Ly->fc2, Ly->fc2_b, x, W, 1);
        } else {
            cp_matmul(x, W, T, &Ly->qkv, Ly->qkv_b, big, 3 * W, 0);
            cp_attention(big, 3 * W, h, W, c->start, c->len, c->nseg, H, dh, d->causal);
            cp_matmul(h, W, T, &Ly->o, Ly->o_b, x, W, 1);
            cp_layernorm(x, W, x, W, T, W, Ly->ln1_g, Ly->ln1_b, d->ln_eps);
            cp_matmul(x, W, T, &Ly->fc1, Ly->fc1_b, big, F, 0);
            cp_activation(big, T * F, d->act);
            cp_matmul(big, F, T, &Ly->fc2, Ly->fc2_b, x, W, 1);
            cp_layernorm(x, W, x, W, T, W, Ly->ln2_g, Ly->ln2_b, d->ln_eps);
        }
    }
}

/* Pooled rows of the chunk into dst (nseg, W). */
static void pool_rows(const cp_encoder_desc *d, const chunk *c, float *dst) {
    const int64_t W = d->width;
    for (int64_t s = 0; s < c->nseg; s++) {
        float *o = dst + s * W;
        if (c->len[s] == 0) {
            memset(o, 0, (size_t)W * sizeof(float));
        } else if (d->pool == CP_POOL_MEAN) {
            /* sentence-transformers: sum / count (a sentence with no tokens gives zeros, as its clamp does) */
            memset(o, 0, (size_t)W * sizeof(float));
            for (int64_t p = 0; p < c->len[s]; p++) {
                const float *xr = c->x + (c->start[s] + p) * W;
                for (int64_t j = 0; j < W; j++) o[j] += xr[j];
            }
            for (int64_t j = 0; j < W; j++) o[j] /= (float)c->len[s];
        } else {
            const int64_t row = d->pool == CP_POOL_CLS ? c->start[s] : c->pool[s];
            memcpy(o, c->x + row * W, (size_t)W * sizeof(float));
        }
    }
}

int cp_runner_cpu_encode(cp_runner_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                         int normalize, float *out) {
    const cp_encoder_model *m = r->m;
    const cp_encoder_desc *d = &m->d;
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_encoder_check_input(d, ids, mask, B, L));
    const int64_t W = d->width, D = cp_encoder_out_dim(d);
    pthread_mutex_lock(&r->lock);
    int rc = CP_OK;
    for (int64_t b0 = 0; b0 < B && rc == CP_OK;) {
        chunk c;
        rc = pack(r, ids, mask, B, L, b0, 1, &c);
        if (rc != CP_OK) break;
        embed(m, ids, L, r->cols, &c);
        blocks(m, &c, d->layers);
        float *pooled = c.h; /* (nseg, W): h is free after the blocks */
        pool_rows(d, &c, pooled);
        if (d->final_ln) cp_layernorm(pooled, W, pooled, W, c.nseg, W, m->w.lnf_g, m->w.lnf_b, d->ln_eps);
        float *o = out + b0 * D;
        if (d->proj_dim > 0) cp_matmul(pooled, W, c.nseg, &m->w.proj, NULL, o, D, 0);
        else memcpy(o, pooled, (size_t)(c.nseg * W) * sizeof(float));
        for (int64_t s = 0; s < c.nseg; s++)
            if (c.len[s] == 0) memset(o + s * D, 0, (size_t)D * sizeof(float));
        if (normalize) cp_l2_normalize_rows(o, c.nseg, D);
        b0 += c.nseg;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int cp_runner_cpu_hidden_states(cp_runner_cpu *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                                int layer, int final_norm, float *out) {
    const cp_encoder_model *m = r->m;
    const cp_encoder_desc *d = &m->d;
    int64_t nrun;
    CP_CHECK(cp_encoder_layers_for(d, layer, &nrun));
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_encoder_check_input(d, ids, mask, B, L));
    const int64_t W = d->width;
    pthread_mutex_lock(&r->lock);
    int rc = CP_OK;
    for (int64_t b0 = 0; b0 < B && rc == CP_OK;) {
        chunk c;
        rc = pack(r, ids, mask, B, L, b0, 0, &c);
        if (rc != CP_OK) break;
        embed(m, ids, L, r->cols, &c);
        blocks(m, &c, nrun);
        if (d->final_ln && final_norm) cp_layernorm(c.x, W, c.x, W, c.T, W, m->w.lnf_g, m->w.lnf_b, d->ln_eps);
        float *o = out + b0 * L * W;
        if (mask) memset(o, 0, (size_t)(c.nseg * L * W) * sizeof(float));
        for (int64_t s = 0; s < c.nseg; s++)
            for (int64_t k = 0; k < c.len[s]; k++) {
                const int64_t t = c.start[s] + k;
                memcpy(o + (s * L + r->cols[t]) * W, c.x + t * W, (size_t)W * sizeof(float));
            }
        b0 += c.nseg;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}
