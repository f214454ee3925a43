/* cp_runner_cuda.c — the encoder engine's CUDA runner: any cp_encoder_model on one GPU (see cp_device.h).
 *
 * Per pass (T packed tokens; x fp32 residual, h / big in the runner dtype, y fp32 GEMM output):
 *   x = tok[id] + pos[p] (+ type0);  [x = LN_emb(x)];  h = pre-LN ? LN1_0(x) : x
 *   per block, pre-LN:  big = h·Wqkv^T; h = attn(big + bqkv); y = h·Wo^T; x += y + bo, h = LN2(x);
 *                       big = act(h·W1^T + b1); y = big·W2^T; x += y + b2, h = LN1'(x) (next block's LN, fused)
 *              post-LN: the same GEMMs with x = LN1(x + y + bo), h = x; ...; x = LN2(x + y + b2), h = x
 *   pooled: EOT / CLS rows gathered or segment means -> [final LN] -> [projection, fp32 GEMM] -> [L2 normalise]
 *   hidden: [final LN] of every row -> y, copied back and scattered to (B, L, W)
 * Views into the arena are laid out from the context's arena at every pass (an arena that moved after an
 * out-of-memory retry is never used through stale pointers). Small batches run as CUDA graphs, keyed by bucketed
 * shapes (tokens rounded up, prompts rounded up to a power of two), warmed up once before capture.
 */
#include "device/cp_device.h"

#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"

#ifdef CP_WITH_CUDA
#include "device/cp_device_ctx.h"

struct cp_encoder_cuda {
    const cp_encoder_model *m;
    cp_dev_ctx c;
    cp_dev_layer *L;
    float *tok, *pos, *type0, *emb_g, *emb_b, *lnf_g, *lnf_b, *proj; /* fp32 */
    int64_t tok_cap;   /* most packed tokens per pass */
    int64_t attn_lim;  /* longest segment the attention kernel takes */
    /* arena views of the pass being enqueued (laid out by views()) */
    float *x, *y, *pool, *pooln, *out;
    void *h, *big;
    int32_t *d_tok, *d_pos, *d_start, *d_len, *d_row;
    int32_t *h_tok, *h_pos, *h_start, *h_len, *h_row; /* page-locked twins */
    /* the pass being enqueued (read by forward() when run directly or captured into a graph) */
    int64_t T, nseg, max_len, nrun;
    int pooled, normalize, final_norm;
};

/* Arena layout for T tokens (and T segments): offsets from the base, total device and host bytes. */
typedef struct {
    size_t x, y, h, big, pool, pooln, out, ints[5], hints[5], bytes, host_bytes;
} layout;

static void plan(const cp_encoder_cuda *r, int64_t T, layout *o) {
    const cp_encoder_desc *d = &r->m->d;
    const int64_t W = d->width, F = d->ffn, D = cp_encoder_out_dim(d), big = 3 * W > F ? 3 * W : F;
    const size_t es = cp_cuda_dtype_size(r->c.dt);
    size_t off = 0, hoff = 0;
#define TAKE(n) (off += cp_dev_align(n), off - cp_dev_align(n))
#define HTAKE(n) (hoff += cp_dev_align(n), hoff - cp_dev_align(n))
    o->x = TAKE((size_t)(T * W) * 4), o->y = TAKE((size_t)(T * W) * 4), o->h = TAKE((size_t)(T * W) * es);
    o->big = TAKE((size_t)(T * big) * es), o->pool = TAKE((size_t)(T * W) * 4), o->pooln = TAKE((size_t)(T * W) * 4);
    o->out = TAKE((size_t)(T * (D > W ? D : W)) * 4);
    /* tok | pos | start | len | row: consecutive and equally spaced in both (one copy moves them all) */
    for (int i = 0; i < 5; i++) o->ints[i] = TAKE((size_t)T * 4), o->hints[i] = HTAKE((size_t)T * 4);
#undef TAKE
#undef HTAKE
    o->bytes = off, o->host_bytes = hoff;
}

/* Tokens the current arena holds room for (0 without one). */
static int64_t arena_tokens(const cp_encoder_cuda *r) {
    if (r->c.arena == NULL) return 0;
    int64_t lo = 0, hi = r->tok_cap;
    while (lo < hi) { /* the largest T whose layout fits */
        const int64_t mid = (lo + hi + 1) / 2;
        layout o;
        plan(r, mid, &o);
        if (o.bytes <= r->c.arena_bytes && o.host_bytes <= r->c.host_bytes) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Makes room for T tokens (growing geometrically) and lays the views out from the arena as it is now. */
static int views(cp_encoder_cuda *r, int64_t T) {
    int64_t have = arena_tokens(r);
    if (T > have) {
        const int64_t want = cp_dev_arena_grow(T, have, r->tok_cap);
        layout o;
        plan(r, want, &o);
        CP_CHECK(cp_dev_arena_reserve(&r->c, o.bytes, o.host_bytes));
        have = want;
    }
    layout o;
    plan(r, have, &o);
    unsigned char *a = r->c.arena, *hb = r->c.host;
    r->x = (float *)(a + o.x), r->y = (float *)(a + o.y), r->h = a + o.h, r->big = a + o.big;
    r->pool = (float *)(a + o.pool), r->pooln = (float *)(a + o.pooln), r->out = (float *)(a + o.out);
    int32_t **dv[5] = {&r->d_tok, &r->d_pos, &r->d_start, &r->d_len, &r->d_row};
    int32_t **hv[5] = {&r->h_tok, &r->h_pos, &r->h_start, &r->h_len, &r->h_row};
    for (int i = 0; i < 5; i++) *dv[i] = (int32_t *)(a + o.ints[i]), *hv[i] = (int32_t *)(hb + o.hints[i]);
    return CP_OK;
}

static int bind(cp_encoder_cuda *r) {
    const cp_encoder_model *m = r->m;
    const cp_encoder_desc *d = &m->d;
    cp_dev_ctx *c = &r->c;
    const int64_t W = d->width, F = d->ffn, V = d->vocab, P = d->max_pos, D = d->proj_dim;
    const int F32 = CP_DEVICE_FLOAT32;
    for (int pass = 0; pass < 2; pass++) {
        r->tok = cp_dev_place(c, (size_t)(V * W) * 4);
        r->pos = cp_dev_place(c, (size_t)(P * W) * 4);
        r->type0 = m->w.type0 ? cp_dev_place(c, (size_t)W * 4) : NULL;
        r->emb_g = d->emb_ln ? cp_dev_place(c, (size_t)W * 4) : NULL;
        r->emb_b = d->emb_ln ? cp_dev_place(c, (size_t)W * 4) : NULL;
        r->lnf_g = d->final_ln ? cp_dev_place(c, (size_t)W * 4) : NULL;
        r->lnf_b = d->final_ln ? cp_dev_place(c, (size_t)W * 4) : NULL;
        r->proj = D > 0 ? cp_dev_place(c, (size_t)(W * D) * 4) : NULL;
        for (int64_t l = 0; l < d->layers; l++) cp_dev_layer_place(c, &r->L[l], W, F);
        if (pass == 0) {
            int64_t stage = F * W > 3 * W * W ? F * W : 3 * W * W;
            if (stage < (int64_t)1 << 20) stage = (int64_t)1 << 20; /* room for dequantised embedding chunks */
            CP_CHECK(cp_dev_weights_alloc(c, (size_t)stage));
        }
    }
    CP_CHECK(cp_dev_upload_wmat(c, r->tok, &m->w.tok, F32));
    CP_CHECK(cp_dev_upload(c, r->pos, m->w.pos, P * W, F32));
    if (r->type0) CP_CHECK(cp_dev_upload(c, r->type0, m->w.type0, W, F32));
    if (r->emb_g) CP_CHECK(cp_dev_upload(c, r->emb_g, m->w.emb_ln_g, W, F32));
    if (r->emb_b) CP_CHECK(cp_dev_upload(c, r->emb_b, m->w.emb_ln_b, W, F32));
    if (r->lnf_g) CP_CHECK(cp_dev_upload(c, r->lnf_g, m->w.lnf_g, W, F32));
    if (r->lnf_b) CP_CHECK(cp_dev_upload(c, r->lnf_b, m->w.lnf_b, W, F32));
    if (r->proj) {
        if (m->w.proj.type != CP_WT_F32)
            CP_FAIL(CP_ERR_MODEL_FORMAT, "the CUDA runner takes a float32 output projection only");
        CP_CHECK(cp_dev_upload(c, r->proj, m->w.proj.data, W * D, F32)); /* raw, in its layout */
    }
    for (int64_t l = 0; l < d->layers; l++) CP_CHECK(cp_dev_layer_upload(c, &r->L[l], &m->w.layers[l]));
    return cp_dev_weights_done(c);
}

int cp_encoder_cuda_create(const cp_encoder_model *m, const cp_device_options *opt, cp_encoder_cuda **out) {
    *out = NULL;
    cp_encoder_cuda *r = calloc(1, sizeof *r);
    if (!r) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    r->m = m;
    int rc = cp_dev_runner_init(&r->c, opt, m->d.max_len, m->d.layers, &r->L, &r->tok_cap);
    if (rc == CP_OK) rc = cp_cuda_attention_prepare(m->d.width / m->d.heads, r->c.dt, &r->attn_lim);
    if (rc == CP_OK) rc = bind(r);
    if (rc != CP_OK) {
        cp_encoder_cuda_free(r);
        return rc;
    }
    *out = r;
    return CP_OK;
}

void cp_encoder_cuda_free(cp_encoder_cuda *r) {
    if (r == NULL) return;
    cp_dev_ctx_release(&r->c);
    free(r->L);
    free(r);
}

size_t cp_encoder_cuda_weight_bytes(const cp_encoder_cuda *r) { return r->c.wsize; }
size_t cp_encoder_cuda_arena_bytes(const cp_encoder_cuda *r) { return r->c.arena_bytes + CP_DEV_WS_BYTES; }
int cp_encoder_cuda_graphs(const cp_encoder_cuda *r) {
    int n = 0;
    for (int i = 0; i < r->c.ngraphs; i++) n += r->c.graphs[i].exec != NULL;
    return n;
}

/* Enqueues one pass for the tables already on the device (r->T, r->nseg, ...). */
static int forward(void *arg) {
    cp_encoder_cuda *r = arg;
    const cp_encoder_model *m = r->m;
    const cp_encoder_desc *d = &m->d;
    void *s = r->c.stream, *blas = r->c.blas;
    const int dt = r->c.dt, F32 = CP_DEVICE_FLOAT32;
    const int64_t T = r->T, W = d->width, F = d->ffn, H = d->heads, dh = W / H;
    const float eps = d->ln_eps;
    CP_CHECK(cp_cuda_embed(r->tok, r->pos, r->type0, r->d_tok, r->d_pos, T, W, r->x, s));
    if (d->emb_ln) CP_CHECK(cp_cuda_layernorm(r->x, T, W, r->emb_g, r->emb_b, eps, r->x, d->pre_ln ? NULL : r->h, dt, s));
    else if (!d->pre_ln && dt == F32) CP_CHECK(cp_cuda_memcpy_d2d(r->h, r->x, (size_t)(T * W) * 4, s));
    else if (!d->pre_ln) CP_CHECK(cp_cuda_convert(r->x, r->h, dt, T * W, s));
    if (d->pre_ln && r->nrun > 0)
        CP_CHECK(cp_cuda_layernorm(r->x, T, W, r->L[0].ln1_g, r->L[0].ln1_b, eps, NULL, r->h, dt, s));
    for (int64_t l = 0; l < r->nrun; l++) {
        const cp_dev_layer *Ly = &r->L[l];
        const int last = l == r->nrun - 1;
        CP_CHECK(cp_cuda_gemm(blas, dt, dt, r->h, W, T, W, Ly->qkv_w, 0, 3 * W, r->big, 3 * W, 0.0f));
        CP_CHECK(cp_cuda_attention(r->big, Ly->qkv_b, r->h, dt, r->d_start, r->d_len, r->nseg, r->max_len, H, dh,
                                   d->causal, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, F32, r->h, W, T, W, Ly->o_w, 0, W, r->y, W, 0.0f));
        if (d->pre_ln)
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, Ly->o_b, T, W, CP_CUDA_RES_PRE_LN, Ly->ln2_g, Ly->ln2_b, eps,
                                           r->h, dt, s));
        else
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, Ly->o_b, T, W, CP_CUDA_RES_POST_LN, Ly->ln1_g, Ly->ln1_b, eps,
                                           r->h, dt, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, dt, r->h, W, T, W, Ly->fc1_w, 0, F, r->big, F, 0.0f));
        CP_CHECK(cp_cuda_bias_act(r->big, dt, T, F, Ly->fc1_b, (int)d->act, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, F32, r->big, F, T, F, Ly->fc2_w, 0, W, r->y, W, 0.0f));
        if (!d->pre_ln)
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, Ly->fc2_b, T, W, CP_CUDA_RES_POST_LN, Ly->ln2_g, Ly->ln2_b, eps,
                                           r->h, dt, s));
        else if (last)
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, Ly->fc2_b, T, W, CP_CUDA_RES_PLAIN, NULL, NULL, eps, NULL, dt, s));
        else
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, Ly->fc2_b, T, W, CP_CUDA_RES_PRE_LN, r->L[l + 1].ln1_g,
                                           r->L[l + 1].ln1_b, eps, r->h, dt, s));
    }
    if (!r->pooled) { /* hidden states: [final LayerNorm of] every row into y */
        if (d->final_ln && r->final_norm)
            return cp_cuda_layernorm(r->x, T, W, r->lnf_g, r->lnf_b, eps, r->y, NULL, F32, s);
        return cp_cuda_memcpy_d2d(r->y, r->x, (size_t)(T * W) * sizeof(float), s);
    }
    const int64_t D = cp_encoder_out_dim(d);
    if (d->pool == CP_POOL_MEAN) CP_CHECK(cp_cuda_mean_pool(r->x, W, r->d_start, r->d_len, r->nseg, r->pool, s));
    else CP_CHECK(cp_cuda_gather_rows(r->x, W, r->d_row, r->nseg, r->pool, s));
    float *pooled = r->pool;
    if (d->final_ln) {
        CP_CHECK(cp_cuda_layernorm(r->pool, r->nseg, W, r->lnf_g, r->lnf_b, eps, r->pooln, NULL, F32, s));
        pooled = r->pooln;
    }
    if (r->proj)
        CP_CHECK(cp_cuda_gemm(blas, F32, F32, pooled, W, r->nseg, W, r->proj, d->proj_layout == CP_W_IN_OUT, D,
                              r->out, D, 0.0f));
    else
        CP_CHECK(cp_cuda_memcpy_d2d(r->out, pooled, (size_t)(r->nseg * W) * sizeof(float), s));
    if (r->normalize) CP_CHECK(cp_cuda_l2_normalize(r->out, r->nseg, D, s));
    return CP_OK;
}

/* Packs prompts [b0, ...) into one pass; returns how many were taken in *taken. */
static int run_chunk(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, int64_t b0,
                     int pooled, int64_t *taken) {
    const cp_encoder_desc *d = &r->m->d;
    int64_t T = 0, b1 = b0, max_len = 0;
    while (b1 < B && b1 - b0 < r->tok_cap) {
        const int64_t n = cp_encoder_columns(d, ids + b1 * L, mask ? mask + b1 * L : NULL, L, pooled, NULL, NULL);
        if (T + n > r->tok_cap && b1 > b0) break;
        T += n;
        if (n > max_len) max_len = n;
        b1++;
    }
    const int64_t nseg = b1 - b0;
    const int small = r->c.graphs_off == 0 && nseg <= r->c.graph_max;
    const int64_t Tp = small ? cp_dev_bucket_tokens(T > 0 ? T : 1, r->tok_cap) : (T > 0 ? T : 1);
    const int64_t Sp = small ? cp_dev_bucket_prompts(nseg, Tp) : nseg;
    const int64_t grid = small ? L : (max_len > 0 ? max_len : 1);
    if (grid > r->attn_lim)
        CP_FAIL(CP_ERR_INVALID_ARG, "inputs of %lld tokens exceed the device attention limit of %lld tokens",
                (long long)grid, (long long)r->attn_lim);
    CP_CHECK(views(r, Tp > Sp ? Tp : Sp));
    int64_t t = 0;
    for (int64_t s = 0; s < nseg; s++) {
        const int64_t b = b0 + s;
        const int32_t *row = ids + b * L;
        int64_t at = 0;
        /* h_pos first receives each token's column, then its position id */
        const int64_t n = cp_encoder_columns(d, row, mask ? mask + b * L : NULL, L, pooled, r->h_pos + t, &at);
        r->h_start[s] = (int32_t)t, r->h_len[s] = (int32_t)n;
        for (int64_t k = 0; k < n; k++) {
            const int64_t col = r->h_pos[t + k];
            r->h_tok[t + k] = row[col];
            r->h_pos[t + k] = (int32_t)cp_encoder_position(d, col, k);
        }
        r->h_row[s] = (int32_t)(d->pool == CP_POOL_CLS ? t : t + at);
        t += n;
    }
    for (; t < Tp; t++) r->h_tok[t] = -1, r->h_pos[t] = 0; /* padding rows: zero embeddings */
    for (int64_t s = nseg; s < Sp; s++) r->h_start[s] = 0, r->h_len[s] = 0, r->h_row[s] = 0;
    r->T = Tp, r->nseg = Sp, r->max_len = grid;
    void *st = r->c.stream;
    CP_CHECK(cp_cuda_memcpy_h2d(r->d_tok, r->h_tok, (size_t)((const char *)(r->h_row + Sp) - (const char *)r->h_tok), st));
    const int64_t key[6] = {pooled ? 1 + r->normalize : 3 + r->final_norm, Tp, Sp, grid, r->nrun, d->layers};
    CP_CHECK(cp_dev_run(&r->c, small, key, forward, r));
    *taken = nseg;
    return CP_OK;
}

int cp_encoder_cuda_encode(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                           int normalize, float *out) {
    const cp_encoder_desc *d = &r->m->d;
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_encoder_check_input(d, ids, mask, B, L));
    const int64_t D = cp_encoder_out_dim(d);
    pthread_mutex_lock(&r->c.lock);
    int rc = cp_cuda_set_device(r->c.device);
    for (int64_t b0 = 0; rc == CP_OK && b0 < B;) {
        int64_t n = 0;
        r->pooled = 1, r->normalize = normalize, r->final_norm = 1, r->nrun = d->layers;
        rc = run_chunk(r, ids, mask, B, L, b0, 1, &n);
        if (rc == CP_OK) rc = cp_cuda_memcpy_d2h(out + b0 * D, r->out, (size_t)(n * D) * sizeof(float), r->c.stream);
        if (rc == CP_OK) rc = cp_cuda_stream_sync(r->c.stream);
        if (rc == CP_OK) /* a prompt with no tokens under its mask gives a zero row, as on the CPU */
            for (int64_t s = 0; s < n; s++)
                if (r->h_len[s] == 0) memset(out + (b0 + s) * D, 0, (size_t)D * sizeof(float));
        b0 += n;
    }
    pthread_mutex_unlock(&r->c.lock);
    return rc;
}

int cp_encoder_cuda_hidden_states(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                                  int layer, int final_norm, float *out) {
    const cp_encoder_desc *d = &r->m->d;
    int64_t nrun;
    CP_CHECK(cp_encoder_layers_for(d, layer, &nrun));
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_encoder_check_input(d, ids, mask, B, L));
    const int64_t W = d->width;
    pthread_mutex_lock(&r->c.lock);
    int rc = cp_cuda_set_device(r->c.device);
    float *tmp = NULL;
    for (int64_t b0 = 0; rc == CP_OK && b0 < B;) {
        int64_t n = 0;
        r->pooled = 0, r->normalize = 0, r->final_norm = final_norm, r->nrun = nrun;
        rc = run_chunk(r, ids, mask, B, L, b0, 0, &n);
        if (rc != CP_OK) break;
        float *o = out + b0 * L * W;
        if (mask == NULL) { /* every column computed: the packed rows are (n, L) already */
            rc = cp_cuda_memcpy_d2h(o, r->y, (size_t)(n * L * W) * sizeof(float), r->c.stream);
            if (rc == CP_OK) rc = cp_cuda_stream_sync(r->c.stream);
            b0 += n;
            continue;
        }
        int64_t T = 0;
        for (int64_t s = 0; s < n; s++) T += r->h_len[s];
        free(tmp);
        tmp = malloc((size_t)((T > 0 ? T : 1) * W) * sizeof(float));
        if (!tmp) {
            rc = cp_fail(CP_ERR_NOMEM, "out of memory for %lld hidden-state rows", (long long)T);
            break;
        }
        rc = cp_cuda_memcpy_d2h(tmp, r->y, (size_t)(T * W) * sizeof(float), r->c.stream);
        if (rc == CP_OK) rc = cp_cuda_stream_sync(r->c.stream);
        if (rc != CP_OK) break;
        memset(o, 0, (size_t)(n * L * W) * sizeof(float));
        for (int64_t s = 0; s < n; s++) {
            const int32_t *mr = mask + (b0 + s) * L;
            int64_t k = 0;
            for (int64_t col = 0; col < L; col++)
                if (mr[col]) memcpy(o + (s * L + col) * W, tmp + (r->h_start[s] + k++) * W, (size_t)W * sizeof(float));
        }
        b0 += n;
    }
    free(tmp);
    pthread_mutex_unlock(&r->c.lock);
    return rc;
}

#else /* !CP_WITH_CUDA */

struct cp_encoder_cuda {
    int unused;
};

int cp_encoder_cuda_create(const cp_encoder_model *m, const cp_device_options *opt, cp_encoder_cuda **out) {
    (void)m;
    *out = NULL;
    if (opt) CP_CHECK(cp_device_check_options(opt));
    CP_FAIL(CP_ERR_DEVICE, "this build of clipprompt has no CUDA backend (built without nvcc or with CLIPPROMPT_CUDA=0)");
}
void cp_encoder_cuda_free(cp_encoder_cuda *r) { (void)r; }
int cp_encoder_cuda_encode(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                           int normalize, float *out) {
    (void)r, (void)ids, (void)mask, (void)B, (void)L, (void)normalize, (void)out;
    CP_FAIL(CP_ERR_DEVICE, "no CUDA backend in this build");
}
int cp_encoder_cuda_hidden_states(cp_encoder_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                                  int layer, int final_norm, float *out) {
    (void)r, (void)ids, (void)mask, (void)B, (void)L, (void)layer, (void)final_norm, (void)out;
    CP_FAIL(CP_ERR_DEVICE, "no CUDA backend in this build");
}
size_t cp_encoder_cuda_weight_bytes(const cp_encoder_cuda *r) { (void)r; return 0; }
size_t cp_encoder_cuda_arena_bytes(const cp_encoder_cuda *r) { (void)r; return 0; }
int cp_encoder_cuda_graphs(const cp_encoder_cuda *r) { (void)r; return 0; }

#endif
