/* Montgomery products in 27-bit digits, four at a time: the arithmetic the compiled parts of fedacq
 * share (fedacq/learn/_histkernel.c, fedacq/crypto/_powmod.c include it; every function is static).
 *
 * The math. Montgomery's product of a R and b R is (a R)(b R) / R mod m = (a b) R: the product
 * t = (a R)(b R) plus the multiple q m (q < R) that makes t + q m divisible by R, divided by R.
 * Here R = 2^(27 L) with 27 L >= bits(m) + 2, so R > 4m: with both factors below 2m the result
 * (t + q m) / R < (4 m^2 + R m) / R < 2m, so no product needs the final subtraction ("lazy"
 * reduction) and every value stays below 2m. Digit by digit (CIOS): for each digit a_i of a,
 * add a_i b to the running sum t, take q_i = t_0 (-m^-1) mod 2^27, add q_i m (digit 0 of t is now
 * zero) and shift t down one digit. The digits of t are not carried inside the loop: each is a
 * 64-bit sum of at most 2L products below 2^54, which stays below 2^64 while L <= 510 (moduli up
 * to 13,770 bits); one pass at the end carries them back into 27-bit digits. The value is
 * Montgomery's, so its digits are the same whichever loop computes them. Leaving the form is a
 * product with the plain 1 (x R R^-1 = x, at most m; m itself is folded to 0): the canonical residue,
 * bit for bit what `acc * x % m` in Python gives over the same rows in any order (products mod m
 * are associative and commutative). m must be odd (R invertible mod m): any Paillier or OU one is.
 *
 * Four lanes. 27-bit digits are what AVX2 multiplies: one vpmuludq takes the low 32 bits of four
 * 64-bit lanes, so four independent products with the same modulus advance together, one lane each
 * (mont4; mont4_portable computes the same digits where there is no AVX2, about 5x slower than GMP).
 *
 * Why. Measured on the project's 2-core machine (AMD EPYC, Zen 3), one product at 4096 bits
 * (Paillier's n^2): GMP's mpn_mul_n and a Montgomery reduction of mpn_addmul_1 calls 5.6-6.2 us, GMP's
 * own internal redc_1 5.3-6.0 us, this AVX2 loop 3.0-3.7 us; at 2048 bits (OU's n): 1.5, 1.5 and
 * 0.75-0.85 us. GMP's reduction is schoolbook while its multiply is Toom-Cook, so the reduction was
 * two thirds of each product.
 */
#ifndef FEDACQ_LANES_H
#define FEDACQ_LANES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_BUILD 1
#endif

#if GMP_LIMB_BITS != 64 || GMP_NAIL_BITS != 0
#error "fedacq's compiled kernels expect 64-bit GMP limbs without nails"
#endif
#if PY_BIG_ENDIAN
#error "fedacq's compiled kernels expect a little-endian host (ciphertexts are little-endian limbs)"
#endif

#define DIGIT_BITS 27
#define DIGIT_MASK ((UINT64_C(1) << DIGIT_BITS) - 1)
#define MAX_DIGITS 510
#define LANES 4

/* A modulus in the kernel's form: its limbs, its digits in four lanes, and -m^-1 mod 2^27. */
typedef struct {
    const mp_limb_t *limbs; /* k limbs, borrowed */
    mp_size_t k;
    int L;                  /* digits of R = 2^(27 L): even, 27 L >= bits(m) + 2 */
    uint64_t minv;
    uint64_t *m4;           /* digit j of m in lanes 4j..4j+3, 32-byte aligned */
    uint64_t *one4;         /* the plain 1 in every lane: a product with it leaves Montgomery form */
    uint64_t *scratch;      /* a, b, product, sum: (4 L + L + 2) lane vectors */
} Mod;

static int digits_for(const mp_limb_t *m, mp_size_t k) {
    size_t bits = mpn_sizeinbase(m, k, 2);
    int L = (int)((bits + 2 + DIGIT_BITS - 1) / DIGIT_BITS);
    return L + (L & 1);
}

static void *aligned_lanes(size_t vectors) {
    void *p = NULL;
    if (posix_memalign(&p, 32, vectors * LANES * sizeof(uint64_t)))
        return NULL;
    memset(p, 0, vectors * LANES * sizeof(uint64_t));
    return p;
}

static void mod_release(Mod *M) {
    free(M->m4);
    free(M->one4);
    free(M->scratch);
    M->m4 = M->one4 = M->scratch = NULL;
}

/* x's digits (x below 2^(27 L), given as k limbs) into lane `lane` of a lane-interleaved buffer, or
 * (lane < 0) into L consecutive uint32. */
static void digits_of_limbs(void *dst, int lane, const mp_limb_t *x, mp_size_t k, int L) {
    for (int j = 0; j < L; j++) {
        size_t bit = (size_t)j * DIGIT_BITS, w = bit / 64;
        unsigned s = (unsigned)(bit % 64);
        uint64_t v = w < (size_t)k ? x[w] >> s : 0;
        if (s > 64 - DIGIT_BITS && w + 1 < (size_t)k)
            v |= x[w + 1] << (64 - s);
        if (lane < 0)
            ((uint32_t *)dst)[j] = (uint32_t)(v & DIGIT_MASK);
        else
            ((uint64_t *)dst)[LANES * j + lane] = v & DIGIT_MASK;
    }
}

/* The k limbs of the value in lane `lane` (carried digits, value below 2^(64k)). */
static void limbs_of_lane(mp_limb_t *x, const uint64_t *v, int lane, mp_size_t k, int L) {
    memset(x, 0, (size_t)k * sizeof(mp_limb_t));
    for (int j = 0; j < L; j++) {
        uint64_t d = v[LANES * j + lane];
        size_t bit = (size_t)j * DIGIT_BITS, w = bit / 64;
        unsigned s = (unsigned)(bit % 64);
        if (!d || w >= (size_t)k)
            continue;
        x[w] |= d << s;
        if (s > 64 - DIGIT_BITS && w + 1 < (size_t)k)
            x[w + 1] |= d >> (64 - s);
    }
}

static int mod_init(Mod *M, const mp_limb_t *m, mp_size_t k) {
    memset(M, 0, sizeof(*M));
    M->limbs = m;
    M->k = k;
    M->L = digits_for(m, k);
    if (M->L > MAX_DIGITS) {
        PyErr_Format(PyExc_ValueError, "a %zu-bit modulus is beyond the kernel's %d digits",
                     mpn_sizeinbase(m, k, 2), MAX_DIGITS);
        return -1;
    }
    uint64_t inv = m[0]; /* Newton: each step doubles the correct low bits of m0^-1, 3 -> 48 */
    for (int i = 0; i < 4; i++)
        inv *= 2 - m[0] * inv;
    M->minv = (0 - inv) & DIGIT_MASK;
    M->m4 = aligned_lanes((size_t)M->L);
    M->one4 = aligned_lanes((size_t)M->L);
    M->scratch = aligned_lanes((size_t)(5 * M->L + 2));
    if (!M->m4 || !M->one4 || !M->scratch) {
        mod_release(M);
        PyErr_NoMemory();
        return -1;
    }
    for (int lane = 0; lane < LANES; lane++) {
        digits_of_limbs(M->m4, lane, m, k, M->L);
        M->one4[lane] = 1;
    }
    return 0;
}

/* Four Montgomery products, one per lane: r = a b / R mod m (all below 2m, digits carried), t: L + 1
 * lane vectors of scratch. The portable loop: the same digits as mont4_avx2, with the lanes innermost
 * (32 x 32 -> 64-bit products of four lanes, which compilers vectorise where they can). */
static void mont4_portable(uint64_t *r, const uint64_t *a, const uint64_t *b, const Mod *M, uint64_t *t) {
    const int L = M->L;
    const uint64_t *m = M->m4;
    uint64_t q[LANES], carry[LANES];
    memset(t, 0, (size_t)(L + 1) * LANES * sizeof(uint64_t));
    for (int i = 0; i < L; i++) {
        const uint64_t *ai = a + LANES * i;
        for (int lane = 0; lane < LANES; lane++) {
            uint64_t x0 = t[lane] + (uint64_t)(uint32_t)ai[lane] * (uint32_t)b[lane];
            q[lane] = ((x0 & DIGIT_MASK) * M->minv) & DIGIT_MASK;
            carry[lane] = (x0 + q[lane] * m[lane]) >> DIGIT_BITS;
        }
        for (int j = 1; j < L; j++)
            for (int lane = 0; lane < LANES; lane++)
                t[LANES * (j - 1) + lane] = t[LANES * j + lane] +
                                            (uint64_t)(uint32_t)ai[lane] * (uint32_t)b[LANES * j + lane] +
                                            (uint64_t)(uint32_t)q[lane] * (uint32_t)m[LANES * j + lane];
        for (int lane = 0; lane < LANES; lane++) {
            t[lane] += carry[lane];
            t[LANES * (L - 1) + lane] = 0;
        }
    }
    for (int lane = 0; lane < LANES; lane++)
        carry[lane] = 0;
    for (int j = 0; j < L; j++)
        for (int lane = 0; lane < LANES; lane++) {
            uint64_t v = t[LANES * j + lane] + carry[lane];
            r[LANES * j + lane] = v & DIGIT_MASK;
            carry[lane] = v >> DIGIT_BITS;
        }
}

#ifdef HAVE_AVX2_BUILD
/* The same with the four lanes in one AVX2 register, two digits of a per step: q_i and q_(i+1)
 * are found first (digit 1 of the sum needs q_i's and a_(i+1)'s terms), then one pass over j adds
 * a_i b_j + q_i m_j + a_(i+1) b_(j-1) + q_(i+1) m_(j-1) into digit j - 2 of the shifted sum. */
__attribute__((target("avx2"))) static void mont4_avx2(uint64_t *r, const uint64_t *a, const uint64_t *b,
                                                        const Mod *M, uint64_t *t) {
    const int L = M->L;
    const __m256i *A = (const __m256i *)a, *B = (const __m256i *)b, *Mv = (const __m256i *)M->m4;
    __m256i *T = (__m256i *)t, *R = (__m256i *)r;
    const __m256i mask = _mm256_set1_epi64x((long long)DIGIT_MASK), minv = _mm256_set1_epi64x((long long)M->minv);
    for (int j = 0; j <= L; j++)
        T[j] = _mm256_setzero_si256();
    for (int i = 0; i < L; i += 2) {
        const __m256i a0 = A[i], a1 = A[i + 1];
        __m256i x0 = _mm256_add_epi64(T[0], _mm256_mul_epu32(a0, B[0]));
        const __m256i q0 = _mm256_and_si256(_mm256_mul_epu32(_mm256_and_si256(x0, mask), minv), mask);
        x0 = _mm256_add_epi64(x0, _mm256_mul_epu32(q0, Mv[0]));
        __m256i x1 = _mm256_add_epi64(_mm256_add_epi64(T[1], _mm256_srli_epi64(x0, DIGIT_BITS)),
                                      _mm256_add_epi64(_mm256_mul_epu32(a0, B[1]), _mm256_mul_epu32(q0, Mv[1])));
        x1 = _mm256_add_epi64(x1, _mm256_mul_epu32(a1, B[0]));
        const __m256i q1 = _mm256_and_si256(_mm256_mul_epu32(_mm256_and_si256(x1, mask), minv), mask);
        x1 = _mm256_add_epi64(x1, _mm256_mul_epu32(q1, Mv[0]));
        __m256i bp = B[1], mp = Mv[1];
        for (int j = 2; j < L; j++) {
            const __m256i bj = B[j], mj = Mv[j];
            const __m256i s = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(a0, bj), _mm256_mul_epu32(q0, mj)),
                                               _mm256_add_epi64(_mm256_mul_epu32(a1, bp), _mm256_mul_epu32(q1, mp)));
            T[j - 2] = _mm256_add_epi64(T[j], s);
            bp = bj;
            mp = mj;
        }
        T[L - 2] = _mm256_add_epi64(_mm256_mul_epu32(a1, bp), _mm256_mul_epu32(q1, mp));
        T[L - 1] = _mm256_setzero_si256();
        T[0] = _mm256_add_epi64(T[0], _mm256_srli_epi64(x1, DIGIT_BITS));
    }
    __m256i carry = _mm256_setzero_si256();
    for (int j = 0; j < L; j++) {
        const __m256i v = _mm256_add_epi64(T[j], carry);
        R[j] = _mm256_and_si256(v, mask);
        carry = _mm256_srli_epi64(v, DIGIT_BITS);
    }
}
#endif

typedef void (*Mont4)(uint64_t *, const uint64_t *, const uint64_t *, const Mod *, uint64_t *);
static Mont4 mont4 = mont4_portable;

static Mont4 best_mont4(void) {
#ifdef HAVE_AVX2_BUILD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return mont4_avx2;
#endif
    return mont4_portable;
}

/* x R mod m in L uint32 digits, for x below m given as k limbs; t: k + L / 2 + 2 limbs, q: L / 2 + 2. */
static void to_form(uint32_t *dst, const mp_limb_t *x, const Mod *M, mp_limb_t *t, mp_limb_t *q) {
    const mp_size_t k = M->k;
    const size_t shift = (size_t)M->L * DIGIT_BITS, words = shift / 64;
    const unsigned bits = (unsigned)(shift % 64);
    const mp_size_t n = k + (mp_size_t)words + 1;
    memset(t, 0, (size_t)n * sizeof(mp_limb_t));
    if (bits)
        t[k + (mp_size_t)words] = mpn_lshift(t + words, x, k, bits);
    else
        memcpy(t + words, x, (size_t)k * sizeof(mp_limb_t));
    mp_limb_t r[k];
    mpn_tdiv_qr(q, r, 0, t, n, M->limbs, k);
    digits_of_limbs(dst, -1, r, k, M->L);
}

/* Leave Montgomery form: the values in the first `count` lanes of `a` (lane vectors, below 2m) as k limbs
 * each, canonical (below m); r, t: L and L + 1 lane vectors of scratch. */
static void leave_form(mp_limb_t **out, int count, const uint64_t *a, const Mod *M, uint64_t *r, uint64_t *t) {
    mont4(r, a, M->one4, M, t);
    for (int lane = 0; lane < count; lane++) {
        limbs_of_lane(out[lane], r, lane, M->k, M->L);
        if (mpn_cmp(out[lane], M->limbs, M->k) >= 0) /* at most m: (x + q m) / R < m + 1 for x < 2m */
            mpn_sub_n(out[lane], out[lane], M->limbs, M->k);
    }
}

/* The modulus buffer (k limbs, odd, top limb non-zero) and its kernel form. */
static int mod_get(PyObject *mod_obj, Py_buffer *view, Mod *M) {
    memset(M, 0, sizeof(*M));
    if (PyObject_GetBuffer(mod_obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    const mp_size_t k = view->len / (Py_ssize_t)sizeof(mp_limb_t);
    const mp_limb_t *m = view->buf;
    if (k <= 0 || view->len % (Py_ssize_t)sizeof(mp_limb_t)) {
        PyErr_SetString(PyExc_ValueError, "the modulus must be a whole number of 64-bit limbs");
        return -1;
    }
    if (m[k - 1] == 0 || !(m[0] & 1)) {
        PyErr_SetString(PyExc_ValueError, "the modulus must be odd and fill its top limb");
        return -1;
    }
    return mod_init(M, m, k);
}

/* A buffer of k-limb values, each below m (a peer's ciphertexts pass here), and their count; `what` names one
 * of them in errors ("ciphertext", "base"). Checked whole before any work starts. */
static int values_get(PyObject *obj, Py_buffer *view, const Mod *M, const char *what, Py_ssize_t *n) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    const mp_size_t k = M->k;
    const Py_ssize_t width = (Py_ssize_t)k * (Py_ssize_t)sizeof(mp_limb_t);
    if (view->len % width) {
        PyErr_Format(PyExc_ValueError, "%ss must be whole numbers of the modulus's limb width", what);
        return -1;
    }
    *n = view->len / width;
    const mp_limb_t *x = view->buf;
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (mpn_cmp(x + i * k, M->limbs, k) >= 0) {
            PyErr_Format(PyExc_ValueError, "%s %zd is not below the modulus", what, i);
            return -1;
        }
    }
    return 0;
}

/* to_table(values, modulus) -> bytes: each value (below m, k limbs) as x R mod m in L uint32 digits: the
 * Montgomery-form table the kernels read (one division per value). */
static PyObject *to_table(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cts_obj, *mod_obj, *result = NULL;
    if (!PyArg_ParseTuple(args, "OO", &cts_obj, &mod_obj))
        return NULL;
    Py_buffer cts = {0}, mod = {0};
    Mod M;
    mp_limb_t *t = NULL;
    Py_ssize_t n = 0;
    if (mod_get(mod_obj, &mod, &M) < 0 || values_get(cts_obj, &cts, &M, "ciphertext", &n) < 0)
        goto done;
    const mp_size_t k = M.k;
    const mp_limb_t *x = cts.buf;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * M.L * (Py_ssize_t)sizeof(uint32_t));
    t = PyMem_Malloc((size_t)(3 * k + M.L + 8) * sizeof(mp_limb_t));
    if (!out || !t) {
        Py_XDECREF(out);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    uint32_t *dst = (uint32_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        to_form(dst + i * M.L, x + i * k, &M, t, t + 2 * k + 4);
    Py_END_ALLOW_THREADS
    result = out;
done:
    PyMem_Free(t);
    mod_release(&M);
    if (cts.obj)
        PyBuffer_Release(&cts);
    if (mod.obj)
        PyBuffer_Release(&mod);
    return result;
}

static PyObject *simd(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *enabled = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &enabled))
        return NULL;
    if (enabled != Py_None) {
        int on = PyObject_IsTrue(enabled);
        if (on < 0)
            return NULL;
        Mont4 best = best_mont4();
        if (on && best == mont4_portable) {
            PyErr_SetString(PyExc_RuntimeError, "this CPU (or build) has no AVX2 products");
            return NULL;
        }
        mont4 = on ? best : mont4_portable;
    }
    return PyBool_FromLong(mont4 != mont4_portable);
}

#endif
