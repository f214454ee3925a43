/* cp_minilm_cuda.c — the BERT / MiniLM sentence encoder on one GPU (see cp_device.h).
 *
 * Post-LN blocks over T packed tokens (only the attention mask's tokens, at their column's position id):
 *   x = LN_emb(word + type0 + pos)  (fp32, h = dtype copy)
 *   big = h·Wqkv^T;  h = attention(big + bqkv, full within the sentence);  y = h·Wo^T;  x = LN1(x + y + bo), h = x
 *   big = act(h·W1^T + b1);  y = big·W2^T;  x = LN2(x + y + b2), h = x
 * then the mean over each sentence's rows and the optional L2 normalisation.
 */
#include "device/cp_device.h"

#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"

#ifdef CP_WITH_CUDA
#include "device/cp_device_ctx.h"

struct cp_minilm_cuda {
    const cp_minilm_model *m;
    cp_dev_ctx c;
    cp_dev_layer *L;
    float *word_emb, *pos_emb, *type_row, *emb_g, *emb_b;
    int64_t tok_cap, arena_tokens;
    float *x, *y, *out;
    void *h, *big;
    int32_t *d_tok, *d_pos, *d_start, *d_len;
    int32_t *h_tok, *h_pos, *h_start, *h_len;
    int64_t T, nseg, max_len;
    int normalize;
};

static int bind(cp_minilm_cuda *r) {
    const cp_minilm_model *m = r->m;
    const cp_minilm_config *cf = &m->cfg;
    cp_dev_ctx *c = &r->c;
    const int64_t W = cf->width, F = cf->ffn, V = cf->vocab_size, P = cf->max_pos;
    for (int pass = 0; pass < 2; pass++) {
        r->word_emb = cp_dev_place(c, (size_t)(V * W) * 4);
        r->pos_emb = cp_dev_place(c, (size_t)(P * W) * 4);
        r->type_row = cp_dev_place(c, (size_t)W * 4);
        r->emb_g = cp_dev_place(c, (size_t)W * 4);
        r->emb_b = cp_dev_place(c, (size_t)W * 4);
        for (int64_t l = 0; l < cf->layers; l++) cp_dev_layer_place(c, &r->L[l], W, F);
        if (pass == 0) CP_CHECK(cp_dev_weights_alloc(c, (size_t)(F * W > W * W ? F * W : W * W)));
    }
    const int F32 = CP_DEVICE_FLOAT32;
    CP_CHECK(cp_dev_upload(c, r->word_emb, m->w.word_emb, V * W, F32));
    CP_CHECK(cp_dev_upload(c, r->pos_emb, m->w.pos_emb, P * W, F32));
    CP_CHECK(cp_dev_upload(c, r->type_row, m->w.type_emb, W, F32)); /* token type 0 */
    CP_CHECK(cp_dev_upload(c, r->emb_g, m->w.emb_ln_g, W, F32));
    CP_CHECK(cp_dev_upload(c, r->emb_b, m->w.emb_ln_b, W, F32));
    for (int64_t l = 0; l < cf->layers; l++) {
        const cp_minilm_layer *s = &m->w.layers[l];
        const cp_dev_layer_src src = CP_DEV_LAYER_SRC(s, 0);
        CP_CHECK(cp_dev_layer_upload(c, &r->L[l], &src, W, F));
    }
    return cp_dev_weights_done(c);
}

int cp_minilm_cuda_create(const cp_minilm_model *m, const cp_device_options *opt, cp_minilm_cuda **out) {
    *out = NULL;
    cp_minilm_cuda *r = calloc(1, sizeof *r);
    if (!r) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    r->m = m;
    int rc = cp_dev_runner_init(&r->c, opt, m->cfg.max_pos, m->cfg.layers, &r->L, &r->tok_cap);
    if (rc == CP_OK) rc = bind(r);
    if (rc != CP_OK) {
        cp_minilm_cuda_free(r);
        return rc;
    }
    *out = r;
    return CP_OK;
}

void cp_minilm_cuda_free(cp_minilm_cuda *r) {
    if (r == NULL) return;
    cp_dev_ctx_release(&r->c);
    free(r->L);
    free(r);
}

size_t cp_minilm_cuda_weight_bytes(const cp_minilm_cuda *r) { return r->c.wsize; }
size_t cp_minilm_cuda_arena_bytes(const cp_minilm_cuda *r) { return r->c.arena_bytes + CP_DEV_WS_BYTES; }
int cp_minilm_cuda_graphs(const cp_minilm_cuda *r) { return r->c.ngraphs; }

static int arena_for(cp_minilm_cuda *r, int64_t T) {
    if (T <= r->arena_tokens && r->c.arena) return CP_OK;
    T = cp_dev_arena_grow(T, r->arena_tokens, r->tok_cap);
    const cp_minilm_config *cf = &r->m->cfg;
    const int64_t W = cf->width, F = cf->ffn, big = 3 * W > F ? 3 * W : F;
    const size_t es = cp_cuda_dtype_size(r->c.dt);
    size_t off = 0, hoff = 0;
#define TAKE(n) (off += cp_dev_align(n), off - cp_dev_align(n))
#define HTAKE(n) (hoff += cp_dev_align(n), hoff - cp_dev_align(n))
    const size_t ox = TAKE((size_t)(T * W) * 4), oy = TAKE((size_t)(T * W) * 4), oh = TAKE((size_t)(T * W) * es),
                 ob = TAKE((size_t)(T * big) * es), oo = TAKE((size_t)(T * W) * 4);
    size_t oi[4], hi[4];
    for (int i = 0; i < 4; i++) oi[i] = TAKE((size_t)T * 4), hi[i] = HTAKE((size_t)T * 4);
#undef TAKE
#undef HTAKE
    CP_CHECK(cp_dev_arena_reserve(&r->c, off, hoff));
    unsigned char *a = r->c.arena, *h = r->c.host;
    r->x = (float *)(a + ox), r->y = (float *)(a + oy), r->h = a + oh, r->big = a + ob, r->out = (float *)(a + oo);
    int32_t **dv[4] = {&r->d_tok, &r->d_pos, &r->d_start, &r->d_len};
    int32_t **hv[4] = {&r->h_tok, &r->h_pos, &r->h_start, &r->h_len};
    for (int i = 0; i < 4; i++) *dv[i] = (int32_t *)(a + oi[i]), *hv[i] = (int32_t *)(h + hi[i]);
    r->arena_tokens = T;
    return CP_OK;
}

static int forward(void *arg) {
    cp_minilm_cuda *r = arg;
    const cp_minilm_config *cf = &r->m->cfg;
    void *s = r->c.stream, *blas = r->c.blas;
    const int dt = r->c.dt, F32 = CP_DEVICE_FLOAT32;
    const int64_t T = r->T, W = cf->width, F = cf->ffn, H = cf->heads, dh = W / H;
    const float eps = cf->ln_eps;
    CP_CHECK(cp_cuda_embed(r->word_emb, r->pos_emb, r->type_row, r->d_tok, r->d_pos, T, W, r->x, s));
    CP_CHECK(cp_cuda_layernorm(r->x, T, W, r->emb_g, r->emb_b, eps, r->x, r->h, dt, s));
    for (int64_t l = 0; l < cf->layers; l++) {
        const cp_dev_layer *d = &r->L[l];
        CP_CHECK(cp_cuda_gemm(blas, dt, dt, r->h, W, T, W, d->qkv_w, 0, 3 * W, r->big, 3 * W, 0.0f));
        CP_CHECK(cp_cuda_attention(r->big, d->qkv_b, r->h, dt, r->d_start, r->d_len, r->nseg, r->max_len, H, dh, 0, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, F32, r->h, W, T, W, d->o_w, 0, W, r->y, W, 0.0f));
        CP_CHECK(cp_cuda_bias_residual(r->x, r->y, d->o_b, T, W, CP_CUDA_RES_POST_LN, d->ln1_g, d->ln1_b, eps, r->h, dt, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, dt, r->h, W, T, W, d->fc1_w, 0, F, r->big, F, 0.0f));
        CP_CHECK(cp_cuda_bias_act(r->big, dt, T, F, d->fc1_b, (int)cf->act, s));
        CP_CHECK(cp_cuda_gemm(blas, dt, F32, r->big, F, T, F, d->fc2_w, 0, W, r->y, W, 0.0f));
        CP_CHECK(cp_cuda_bias_residual(r->x, r->y, d->fc2_b, T, W, CP_CUDA_RES_POST_LN, d->ln2_g, d->ln2_b, eps, r->h, dt, s));
    }
    CP_CHECK(cp_cuda_mean_pool(r->x, W, r->d_start, r->d_len, r->nseg, r->out, s));
    if (r->normalize) CP_CHECK(cp_cuda_l2_normalize(r->out, r->nseg, W, s));
    return CP_OK;
}

int cp_minilm_cuda_encode(cp_minilm_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                          int normalize, float *out) {
    const cp_minilm_config *cf = &r->m->cfg;
    const int64_t W = cf->width;
    if (B <= 0) return CP_OK;
    CP_CHECK(cp_minilm_check_input(cf, ids, mask, B, L));
    pthread_mutex_lock(&r->c.lock);
    int rc = cp_cuda_set_device(r->c.device);
    const int64_t lim = rc == CP_OK ? cp_cuda_attention_max_len(W / cf->heads, r->c.dt) : 0;
    int64_t b0 = 0;
    while (rc == CP_OK && b0 < B) {
        int64_t T = 0, b1 = b0, max_len = 0;
        while (b1 < B) {
            int64_t n = 0;
            for (int64_t t = 0; t < L; t++) n += mask[b1 * L + t];
            if (T + n > r->tok_cap && b1 > b0) break;
            T += n;
            if (n > max_len) max_len = n;
            b1++;
        }
        const int64_t nseg = b1 - b0;
        const int small = r->c.graphs_off == 0 && nseg <= r->c.graph_max;
        int64_t Tp = T;
        if (small) {
            Tp = (T + 15) / 16 * 16;
            if (Tp > r->tok_cap) Tp = T;
        }
        if (Tp < 1) Tp = 1;
        const int64_t grid_len = small ? L : (max_len > 0 ? max_len : 1);
        if (grid_len > lim) {
            rc = cp_fail(CP_ERR_INVALID_ARG, "sentences of %lld tokens exceed the device attention limit of %lld",
                         (long long)grid_len, (long long)lim);
            break;
        }
        rc = arena_for(r, Tp > nseg ? Tp : nseg);
        if (rc != CP_OK) break;
        int64_t t = 0;
        for (int64_t s = 0; s < nseg; s++) {
            r->h_start[s] = (int32_t)t;
            const int32_t *ir = ids + (b0 + s) * L, *mr = mask + (b0 + s) * L;
            for (int64_t p = 0; p < L; p++)
                if (mr[p]) r->h_tok[t] = ir[p], r->h_pos[t] = (int32_t)p, t++;
            r->h_len[s] = (int32_t)(t - r->h_start[s]);
        }
        for (; t < Tp; t++) r->h_tok[t] = -1, r->h_pos[t] = 0;
        r->T = Tp, r->nseg = nseg, r->max_len = grid_len, r->normalize = normalize;
        void *st = r->c.stream;
        /* tok | pos | start | len lie at the same offsets in the host twin and the arena: one copy */
        rc = cp_cuda_memcpy_h2d(r->d_tok, r->h_tok, (size_t)((const char *)(r->h_len + nseg) - (const char *)r->h_tok), st);
        const int64_t key[6] = {3, Tp, nseg, grid_len, cf->layers, normalize};
        if (rc == CP_OK) rc = cp_dev_run(&r->c, small, key, forward, r);
        if (rc == CP_OK) rc = cp_cuda_memcpy_d2h(out + b0 * W, r->out, (size_t)(nseg * W) * sizeof(float), st);
        if (rc == CP_OK) rc = cp_cuda_stream_sync(st);
        b0 = b1;
    }
    pthread_mutex_unlock(&r->c.lock);
    return rc;
}

#else /* !CP_WITH_CUDA */

struct cp_minilm_cuda {
    int unused;
};

int cp_minilm_cuda_create(const cp_minilm_model *m, const cp_device_options *opt, cp_minilm_cuda **out) {
    (void)m;
    *out = NULL;
    if (opt) CP_CHECK(cp_device_check_options(opt));
    CP_FAIL(CP_ERR_DEVICE, "this build of clipprompt has no CUDA backend (built without nvcc or with CLIPPROMPT_CUDA=0)");
}
void cp_minilm_cuda_free(cp_minilm_cuda *r) { (void)r; }
int cp_minilm_cuda_encode(cp_minilm_cuda *r, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L,
                          int normalize, float *out) {
    (void)r, (void)ids, (void)mask, (void)B, (void)L, (void)normalize, (void)out;
    CP_FAIL(CP_ERR_DEVICE, "no CUDA backend in this build");
}
size_t cp_minilm_cuda_weight_bytes(const cp_minilm_cuda *r) { (void)r; return 0; }
size_t cp_minilm_cuda_arena_bytes(const cp_minilm_cuda *r) { (void)r; return 0; }
int cp_minilm_cuda_graphs(const cp_minilm_cuda *r) { (void)r; return 0; }

#endif
