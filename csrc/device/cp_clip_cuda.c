/* cp_clip_cuda.c — the CLIP text tower on one GPU (see cp_device.h): weight upload, packing, the layer loop as
 * launches of kernels/ and cuBLAS, CUDA graphs for small batches.
 *
 * Per layer (T packed tokens; x fp32 residual, h / big in the runner dtype, y fp32 GEMM output):
 *   big = h·Wqkv^T;  h = attention(big + bqkv);  y = h·Wo^T;  x += y + bo, h = LN2(x);
 *   big = act(h·W1^T + b1);  y = big·W2^T;  x += y + b2, h = LN1'(x)  (next layer's LayerNorm, fused)
 * Pooling: EOT rows gathered -> final LayerNorm (fp32) -> projection (fp32 GEMM) -> L2 normalise.
 */
#include "device/cp_device.h"

#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"

#ifdef CP_WITH_CUDA
#include "device/cp_device_ctx.h"

struct cp_clip_cuda {
    const cp_clip_model *m;
    cp_dev_ctx c;
    cp_dev_layer *L;
    float *tok_emb, *pos_emb, *lnf_g, *lnf_b, *proj; /* fp32 */
    int64_t tok_cap;       /* most packed tokens per pass */
    int64_t arena_tokens;  /* tokens (and segments) the arena holds room for */
    /* arena views */
    float *x, *y, *pool, *pooln, *out;
    void *h, *big;
    int32_t *d_tok, *d_pos, *d_start, *d_len, *d_eot;
    int32_t *h_tok, *h_pos, *h_start, *h_len, *h_eot; /* page-locked twins */
    /* the pass being enqueued (read by forward() when run directly or captured into a graph) */
    int64_t T, nseg, max_len, nrun;
    int pooled, normalize;
};

static int bind(cp_clip_cuda *r) {
    const cp_clip_model *m = r->m;
    const cp_clip_config *cf = &m->cfg;
    cp_dev_ctx *c = &r->c;
    const int64_t W = cf->width, F = cf->ffn, V = cf->vocab_size, Lc = cf->context;
    const int64_t D = cf->proj_dim;
    for (int pass = 0; pass < 2; pass++) {
        r->tok_emb = cp_dev_place(c, (size_t)(V * W) * 4);
        r->pos_emb = cp_dev_place(c, (size_t)(Lc * W) * 4);
        r->lnf_g = cp_dev_place(c, (size_t)W * 4);
        r->lnf_b = cp_dev_place(c, (size_t)W * 4);
        r->proj = m->w.proj ? cp_dev_place(c, (size_t)(W * D) * 4) : NULL;
        for (int64_t l = 0; l < cf->layers; l++) cp_dev_layer_place(c, &r->L[l], W, F);
        if (pass == 0) CP_CHECK(cp_dev_weights_alloc(c, (size_t)(F * W > 3 * W * W ? F * W : 3 * W * W)));
    }
    CP_CHECK(cp_dev_upload(c, r->tok_emb, m->w.tok_emb, V * W, CP_DEVICE_FLOAT32));
    CP_CHECK(cp_dev_upload(c, r->pos_emb, m->w.pos_emb, Lc * W, CP_DEVICE_FLOAT32));
    CP_CHECK(cp_dev_upload(c, r->lnf_g, m->w.lnf_g, W, CP_DEVICE_FLOAT32));
    CP_CHECK(cp_dev_upload(c, r->lnf_b, m->w.lnf_b, W, CP_DEVICE_FLOAT32));
    if (r->proj) CP_CHECK(cp_dev_upload(c, r->proj, m->w.proj, W * D, CP_DEVICE_FLOAT32));
    for (int64_t l = 0; l < cf->layers; l++) {
        const cp_clip_layer *s = &m->w.layers[l];
        const cp_dev_layer_src src = CP_DEV_LAYER_SRC(s, s->qkv_fused);
        CP_CHECK(cp_dev_layer_upload(c, &r->L[l], &src, W, F));
    }
    return cp_dev_weights_done(c);
}

int cp_clip_cuda_create(const cp_clip_model *m, const cp_device_options *opt, cp_clip_cuda **out) {
    *out = NULL;
    cp_clip_cuda *r = calloc(1, sizeof *r);
    if (!r) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    r->m = m;
    int rc = cp_dev_runner_init(&r->c, opt, m->cfg.context, m->cfg.layers, &r->L, &r->tok_cap);
    if (rc == CP_OK) rc = bind(r);
    if (rc != CP_OK) {
        cp_clip_cuda_free(r);
        return rc;
    }
    *out = r;
    return CP_OK;
}

void cp_clip_cuda_free(cp_clip_cuda *r) {
    if (r == NULL) return;
    cp_dev_ctx_release(&r->c);
    free(r->L);
    free(r);
}

size_t cp_clip_cuda_weight_bytes(const cp_clip_cuda *r) { return r->c.wsize; }
size_t cp_clip_cuda_arena_bytes(const cp_clip_cuda *r) { return r->c.arena_bytes + CP_DEV_WS_BYTES; }
int cp_clip_cuda_graphs(const cp_clip_cuda *r) { return r->c.ngraphs; }

/* Lays the arena out for T tokens / T segments (grows it when needed). */
static int arena_for(cp_clip_cuda *r, int64_t T) {
    if (T <= r->arena_tokens && r->c.arena) return CP_OK;
    T = cp_dev_arena_grow(T, r->arena_tokens, r->tok_cap);
    const cp_clip_config *cf = &r->m->cfg;
    const int64_t W = cf->width, F = cf->ffn, D = cf->proj_dim > 0 ? cf->proj_dim : W;
    const int64_t big = 3 * W > F ? 3 * W : F;
    const size_t es = cp_cuda_dtype_size(r->c.dt);
    size_t off = 0, hoff = 0;
#define TAKE(n) (off += cp_dev_align(n), off - cp_dev_align(n))
#define HTAKE(n) (hoff += cp_dev_align(n), hoff - cp_dev_align(n))
    const size_t ox = TAKE((size_t)(T * W) * 4), oy = TAKE((size_t)(T * W) * 4), oh = TAKE((size_t)(T * W) * es),
                 ob = TAKE((size_t)(T * big) * es), op = TAKE((size_t)(T * W) * 4), opn = TAKE((size_t)(T * W) * 4),
                 oo = TAKE((size_t)(T * D) * 4);
    size_t oi[5], hi[5]; /* tok | pos | start | len | eot, consecutive and equally spaced in both (one copy) */
    for (int i = 0; i < 5; i++) oi[i] = TAKE((size_t)T * 4), hi[i] = HTAKE((size_t)T * 4);
#undef TAKE
#undef HTAKE
    CP_CHECK(cp_dev_arena_reserve(&r->c, off, hoff));
    unsigned char *a = r->c.arena, *h = r->c.host;
    r->x = (float *)(a + ox), r->y = (float *)(a + oy), r->h = a + oh, r->big = a + ob;
    r->pool = (float *)(a + op), r->pooln = (float *)(a + opn), r->out = (float *)(a + oo);
    int32_t **dv[5] = {&r->d_tok, &r->d_pos, &r->d_start, &r->d_len, &r->d_eot};
    int32_t **hv[5] = {&r->h_tok, &r->h_pos, &r->h_start, &r->h_len, &r->h_eot};
    for (int i = 0; i < 5; i++) *dv[i] = (int32_t *)(a + oi[i]), *hv[i] = (int32_t *)(h + hi[i]);
    r->arena_tokens = T;
    return CP_OK;
}

/* Enqueues one pass for the tables already on the device (r->T, r->nseg, ...). */
static int forward(void *arg) {
    cp_clip_cuda *r = arg;
    const cp_clip_model *m = r->m;
    const cp_clip_config *cf = &m->cfg;
    void *s = r->c.stream, *blas = r->c.blas;
    const int dt = r->c.dt;
    const int64_t T = r->T, W = cf->width, F = cf->ffn, H = cf->heads, dh = W / H;
    const float eps = cf->ln_eps;
    CP_CHECK(cp_cuda_embed(r->tok_emb, r->pos_emb, NULL, r->d_tok, r->d_pos, T, W, r->x, s));
    if (r->nrun > 0) CP_CHECK(cp_cuda_layernorm(r->x, T, W, r->L[0].ln1_g, r->L[0].ln1_b, eps, NULL, r->h, dt, s));
    for (int64_t l = 0; l < r->nrun; l++) {
        const cp_dev_layer *d = &r->L[l];
        const int last = l == r->nrun - 1;
        CP_CHECK(cp_cuda_gemm(blas, dt, dt, r->h, W, T, W, d->qkv_w, 0, 3 * W, r->big, 3 * W, 0.0f));
        CP_CHECK(cp_cuda_attention(r->big, d->qkv_b, r->h, dt, r->d_start, r->d_len, r->nseg, r->max_len, H, dh, 1, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, CP_DEVICE_FLOAT32, r->h, W, T, W, d->o_w, 0, W, r->y, W, 0.0f));
        CP_CHECK(cp_cuda_bias_residual(r->x, r->y, d->o_b, T, W, CP_CUDA_RES_PRE_LN, d->ln2_g, d->ln2_b, eps, r->h, dt, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, dt, r->h, W, T, W, d->fc1_w, 0, F, r->big, F, 0.0f));
        CP_CHECK(cp_cuda_bias_act(r->big, dt, T, F, d->fc1_b, (int)cf->act, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, CP_DEVICE_FLOAT32, r->big, F, T, F, d->fc2_w, 0, W, r->y, W, 0.0f));
        if (last)
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, d->fc2_b, T, W, CP_CUDA_RES_PLAIN, NULL, NULL, eps, NULL, dt, s));
        else
            CP_CHECK(cp_cuda_bias_residual(r->x, r->y, d->fc2_b, T, W, CP_CUDA_RES_PRE_LN, r->L[l + 1].ln1_g,
                                           r->L[l + 1].ln1_b, eps, r->h, dt, s));
    }
    if (!r->pooled) /* hidden states: final LayerNorm of every row into y */
        return cp_cuda_layernorm(r->x, T, W, r->lnf_g, r->lnf_b, eps, r->y, NULL, CP_DEVICE_FLOAT32, s);
    const int64_t D = cf->proj_dim > 0 ? cf->proj_dim : W;
    CP_CHECK(cp_cuda_gather_rows(r->x, W, r->d_eot, r->nseg, r->pool, s));
    CP_CHECK(cp_cuda_layernorm(r->pool, r->nseg, W, r->lnf_g, r->lnf_b, eps, r->pooln, NULL, CP_DEVICE_FLOAT32, s));
    if (r->proj)
        CP_CHECK(cp_cuda_gemm(blas, CP_DEVICE_FLOAT32, CP_DEVICE_FLOAT32, r->pooln, W, r->nseg, W, r->proj,
                              m->w.proj_layout == CP_W_IN_OUT, D, r->out, D, 0.0f));
    else
        CP_CHECK(cp_cuda_memcpy_d2d(r->out, r->pooln, (size_t)(r->nseg * W) * sizeof(float), s));
    if (r->normalize) CP_CHECK(cp_cuda_l2_normalize(r->out, r->nseg, D, s));
    return CP_OK;
}

/* Uploads the tables for T (padded to Tp) tokens and nseg segments, then runs forward (graph when small). */
static int run_pass(cp_clip_cuda *r, int64_t T, int64_t Tp, int64_t nseg, int64_t max_len, int use_graph) {
    void *s = r->c.stream;
    for (int64_t t = T; t < Tp; t++) r->h_tok[t] = -1, r->h_pos[t] = 0;
    r->T = Tp, r->nseg = nseg, r->max_len = max_len;
    const int64_t lim = cp_cuda_attention_max_len(r->m->cfg.width / r->m->cfg.heads, r->c.dt);
    if (max_len > lim)
        CP_FAIL(CP_ERR_INVALID_ARG, "prompts of %lld tokens exceed the device attention limit of %lld tokens",
                (long long)max_len, (long long)lim);
    /* the five tables lie at the same offsets in the host twin and the arena: one copy moves them all */
    CP_CHECK(cp_cuda_memcpy_h2d(r->d_tok, r->h_tok, (size_t)((const char *)(r->h_eot + nseg) - (const char *)r->h_tok), s));
    const int64_t key[6] = {r->pooled ? 1 : 2, Tp, nseg, max_len, r->nrun, r->normalize};
    return cp_dev_run(&r->c, use_graph, key, forward, r);
}

/* Graph buckets: T rounded up to a multiple of 16 (and the attention grid to the full context), so one captured
 * graph serves every batch of up to graph_max_batch prompts whose packed length falls in the same bucket. */
static int64_t bucket(int64_t T, int64_t cap) {
    int64_t b = (T + 15) / 16 * 16;
    return b > cap ? T : b;
}

int cp_clip_cuda_encode(cp_clip_cuda *r, const int32_t *ids, int64_t B, int64_t L, int normalize, float *out) {
    const cp_clip_config *cf = &r->m->cfg;
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_clip_check_ids(cf, ids, B, L));
    const int64_t W = cf->width, D = cf->proj_dim > 0 ? cf->proj_dim : W;
    pthread_mutex_lock(&r->c.lock);
    int rc = cp_cuda_set_device(r->c.device);
    int64_t b0 = 0;
    while (rc == CP_OK && b0 < B) {
        /* as many prompts as fit in tok_cap tokens, each only up to its EOT (the CPU's packing) */
        int64_t T = 0, b1 = b0, max_len = 0;
        while (b1 < B) {
            int64_t p;
            cp_clip_pool_positions(cf, ids + b1 * L, 1, L, &p);
            if (T + p + 1 > r->tok_cap && b1 > b0) break;
            T += p + 1;
            if (p + 1 > max_len) max_len = p + 1;
            b1++;
        }
        const int64_t nseg = b1 - b0;
        const int small = r->c.graphs_off == 0 && nseg <= r->c.graph_max;
        const int64_t Tp = small ? bucket(T, r->tok_cap) : T;
        rc = arena_for(r, Tp);
        if (rc != CP_OK) break;
        T = 0;
        for (int64_t s = 0; s < nseg; s++) {
            int64_t p;
            cp_clip_pool_positions(cf, ids + (b0 + s) * L, 1, L, &p);
            r->h_start[s] = (int32_t)T, r->h_len[s] = (int32_t)(p + 1), r->h_eot[s] = (int32_t)(T + p);
            for (int64_t q = 0; q <= p; q++) r->h_tok[T + q] = ids[(b0 + s) * L + q], r->h_pos[T + q] = (int32_t)q;
            T += p + 1;
        }
        r->pooled = 1, r->normalize = normalize, r->nrun = cf->layers;
        rc = run_pass(r, T, Tp, nseg, small ? L : max_len, small);
        if (rc == CP_OK) rc = cp_cuda_memcpy_d2h(out + b0 * D, r->out, (size_t)(nseg * D) * sizeof(float), r->c.stream);
        if (rc == CP_OK) rc = cp_cuda_stream_sync(r->c.stream);
        b0 = b1;
    }
    pthread_mutex_unlock(&r->c.lock);
    return rc;
}

int cp_clip_cuda_hidden_states(cp_clip_cuda *r, const int32_t *ids, int64_t B, int64_t L, int layer, float *out) {
    const cp_clip_config *cf = &r->m->cfg;
    const int64_t NL = cf->layers;
    const int64_t nrun = layer >= 0 ? layer : NL + 1 + layer;
    if (nrun < 0 || nrun > NL)
        CP_FAIL(CP_ERR_INVALID_ARG, "layer %d out of range for a %lld-layer model (use -%lld..%lld)", layer,
                (long long)NL, (long long)NL + 1, (long long)NL);
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_clip_check_ids(cf, ids, B, L));
    const int64_t W = cf->width;
    pthread_mutex_lock(&r->c.lock);
    int rc = cp_cuda_set_device(r->c.device);
    const int64_t per = r->tok_cap / L > 0 ? r->tok_cap / L : 1;
    for (int64_t b0 = 0; rc == CP_OK && b0 < B; b0 += per) {
        const int64_t nseg = B - b0 < per ? B - b0 : per, T = nseg * L;
        rc = arena_for(r, T);
        if (rc != CP_OK) break;
        for (int64_t s = 0; s < nseg; s++) {
            r->h_start[s] = (int32_t)(s * L), r->h_len[s] = (int32_t)L, r->h_eot[s] = (int32_t)(s * L + L - 1);
            for (int64_t q = 0; q < L; q++) r->h_tok[s * L + q] = ids[(b0 + s) * L + q], r->h_pos[s * L + q] = (int32_t)q;
        }
        const int small = r->c.graphs_off == 0 && nseg <= r->c.graph_max;
        r->pooled = 0, r->normalize = 0, r->nrun = nrun;
        rc = run_pass(r, T, T, nseg, L, small);
        if (rc == CP_OK) rc = cp_cuda_memcpy_d2h(out + b0 * L * W, r->y, (size_t)(T * W) * sizeof(float), r->c.stream);
        if (rc == CP_OK) rc = cp_cuda_stream_sync(r->c.stream);
    }
    pthread_mutex_unlock(&r->c.lock);
    return rc;
}

#else /* !CP_WITH_CUDA */

struct cp_clip_cuda {
    int unused;
};

int cp_clip_cuda_create(const cp_clip_model *m, const cp_device_options *opt, cp_clip_cuda **out) {
    (void)m;
    *out = NULL;
    if (opt) CP_CHECK(cp_device_check_options(opt));
    CP_FAIL(CP_ERR_DEVICE, "this build of clipprompt has no CUDA backend (built without nvcc or with CLIPPROMPT_CUDA=0)");
}
void cp_clip_cuda_free(cp_clip_cuda *r) { (void)r; }
int cp_clip_cuda_encode(cp_clip_cuda *r, const int32_t *ids, int64_t B, int64_t L, int normalize, float *out) {
    (void)r, (void)ids, (void)B, (void)L, (void)normalize, (void)out;
    CP_FAIL(CP_ERR_DEVICE, "no CUDA backend in this build");
}
int cp_clip_cuda_hidden_states(cp_clip_cuda *r, const int32_t *ids, int64_t B, int64_t L, int layer, float *out) {
    (void)r, (void)ids, (void)B, (void)L, (void)layer, (void)out;
    CP_FAIL(CP_ERR_DEVICE, "no CUDA backend in this build");
}
size_t cp_clip_cuda_weight_bytes(const cp_clip_cuda *r) { (void)r; return 0; }
size_t cp_clip_cuda_arena_bytes(const cp_clip_cuda *r) { (void)r; return 0; }
int cp_clip_cuda_graphs(const cp_clip_cuda *r) { (void)r; return 0; }

#endif
