// CPU reference implementations of every kernel in kernels/*.cuh and of the
// exec.gemm step. This is the oracle the CUDA backend is checked against (CI
// has no GPU), so it is written to be obviously right rather than fast (the
// GEMM excepted): one plain loop nest per op, fp32 arithmetic, and rounding
// to the element type exactly where the kernel's header comment says so.
//
// Arrays are row-major and contiguous. Activations, weights and caches are
// untyped arrays of an ElementType; index arrays are int32. Batch layout
// (qo_indptr, kv_indptr, kv_page_indices, kv_last_page_len, positions) and the
// paged cache layout [num_pages][page_size][num_kv_heads][head_dim] are those
// of the forward ABI in docs/ARCHITECTURE.md. Indices (token ids, rows, page
// indices, positions) are trusted, as in the kernels.
//
// Results can differ from the GPU's in the last bit where the GPU sums in
// another order (block reductions, online softmax), uses FMA contraction
// (dot products), or approximate intrinsics (rsqrtf, expf, cosf/sinf).
#pragma once

#include <cstddef>
#include <cstdint>

namespace llmc::cpu {

enum class ElementType { f32, f16, bf16 };

// ---- elements ----------------------------------------------------------------

/// Bytes of one element.
size_t elementBytes(ElementType t);
/// base[i] widened to float (exact).
float loadElement(ElementType t, const void *base, int64_t i);
/// dst[0, count) = base[at, at + count) widened to float.
void loadElements(ElementType t, const void *base, int64_t at, int64_t count, float *dst);
/// base[i] = v rounded to t (nearest, ties to even).
void storeElement(ElementType t, void *base, int64_t i, float v);
/// v rounded to t and widened back: a value materialised in the model dtype.
float roundTo(ElementType t, float v);

// ---- kernels (kernels/<name>.cuh) -----------------------------------------------

/// embedding.cuh: out[t, :] = table[token_ids[t], :].
void embedding(ElementType t, int hidden, const int32_t *token_ids, const void *table, void *out,
               int num_tokens);

/// rms_norm.cuh: out = T(float(w) * float(T(h * rsqrt(mean(h^2) + eps)))), h = float(x).
/// out may alias x.
void rmsNorm(ElementType t, int hidden, const void *x, const void *weight, void *out, float eps,
             int num_rows);

/// add_rms_norm.cuh: s = T(a + b); sum_out = s; norm_out = rms_norm(s).
/// sum_out may alias a or b.
void addRmsNorm(ElementType t, int hidden, const void *a, const void *b, const void *weight,
                void *sum_out, void *norm_out, float eps, int num_rows);

/// The head arithmetic of rope_kv_write and paged_attention (rotary_dim is
/// unused by attention).
struct HeadShape {
  int num_heads, num_kv_heads, head_dim, rotary_dim, page_size;
};

/// rope_kv_write.cuh: rows of qkv are [q heads | k heads | v heads]. q_out gets
/// roped q ([num_tokens][num_heads * head_dim]); roped k and unmodified v go
/// to KV position positions[t] of the token's sequence in the caches.
/// inv_freq has rotary_dim / 2 entries.
void ropeKvWrite(ElementType t, const HeadShape &s, const void *qkv, const int32_t *positions,
                 const int32_t *qo_indptr, const int32_t *kv_indptr, const int32_t *kv_page_indices,
                 const float *inv_freq, void *q_out, void *k_cache, void *v_cache, int num_tokens,
                 int num_seqs);

/// paged_attention.cuh: causal (sliding_window > 0: only the last
/// sliding_window positions) GQA attention of each query row over its
/// sequence's cached keys; out[t, h * head_dim ...] = T(softmax(scale q.k) v).
void pagedAttention(ElementType t, const HeadShape &s, const void *q, const void *k_cache,
                    const void *v_cache, const int32_t *positions, const int32_t *qo_indptr,
                    const int32_t *kv_indptr, const int32_t *kv_page_indices,
                    const int32_t *kv_last_page_len, void *out, float scale, int sliding_window,
                    int num_tokens, int num_seqs);

/// silu_mul.cuh: rows of gate_up are [gate | up], each `intermediate` wide;
/// out = T(float(T(silu(gate))) * float(up)).
void siluMul(ElementType t, int intermediate, const void *gate_up, void *out, int num_tokens);

/// gather_rows.cuh: out[i, :] = x[rows[i], :].
void gatherRows(ElementType t, int hidden, const void *x, const int32_t *rows, void *out,
                int num_rows);

// ---- exec.gemm ---------------------------------------------------------------------

/// c[i, j] = T_out(sum_k float(a[i, k]) * float(w[j, k]) (+ float(bias[j]))):
/// a [m][k], w [n][k] and bias [n] (nullptr: none) of type `in`, c [m][n] of
/// type `out`, which must be f32 or `in` (std::invalid_argument otherwise).
/// The sum is fp32 in increasing k order, the bias added to it and the result
/// rounded once (cuBLASLt's bias epilogue, as torch's F.linear uses on GPU).
/// Columns are split between num_threads threads (0: one per hardware
/// thread, fewer for small problems). Every element is summed by one thread in the same order
/// whatever the sizes, so a row's result depends neither on the thread count nor on the other rows
/// of the batch.
void gemm(ElementType in, ElementType out, int64_t m, int64_t n, int64_t k, const void *a,
          const void *w, const void *bias, void *c, int num_threads = 0);

} // namespace llmc::cpu
