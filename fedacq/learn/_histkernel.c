/* The encrypted histogram kernel's inner loop: a feature group's bin sums over a node's rows, in C over GMP.
 *
 * to_montgomery(cts, modulus)
 *   once per tree: each ciphertext x (below the modulus m) becomes x R mod m, R = 2^(64k), in place
 * bin_sums(cts, modulus, rows, cells, n_cells, radix2, nb1, nb2, skip, total) -> bytes
 *   cts      the tree's ciphertexts in Montgomery form, each as `k` 64-bit limbs, least significant
 *            first (a C-contiguous buffer of k * N limbs: numpy uint64 of shape (N, k))
 *   modulus  the ciphertext modulus m (Paillier n^2, OU n; odd) as `k` limbs, the same layout
 *   rows     a node's row indices (any integer buffer, 1-D, strided allowed)
 *   cells    each row's cell (same length as rows), below n_cells, or None: every row in cell 0
 *   radix2   0 for one feature (a cell is its bin code), else a pair's second radix: cell c holds
 *            codes (c / radix2, c % radix2)
 *   nb1, nb2 bins of the first and second feature (a code >= its bins, "missing", is in none)
 *   skip     a cell derived instead of accumulated (-1: none): P(skip) = total / prod_{c != skip} P(c),
 *            `total` (the product over all the node's rows, k limbs, below m) with one inverse
 *   Returns the nb1 + nb2 bin sums S(b) = prod_{cells c with code b} P(c) mod m, as k-limb
 *   integers end to end (an empty bin: 1), where P(c) = prod_{i: cells[i] = c} x_{rows[i]}.
 *   The node total itself is bin_sums(cts, modulus, rows, None, 1, 0, 1, 0, -1, None).
 *
 * The math. Montgomery's product of a R and b R (both below m) is (a R)(b R) / R mod m = (a b) R:
 * one k x k multiply (mpn_mul_n) and one reduction REDC(t) = t / R mod m, which adds to t the
 * multiple q m (q < R, found limb by limb: k calls of mpn_addmul_1) that makes its low k limbs
 * zero, drops them, and subtracts m once if needed (t < m^2 gives a result below 2m). A cell
 * keeps its product in this form, P R, from its first row (x R, no product) to its last; one
 * REDC at the end gives P R / R = P, the canonical residue below m. A one-row cell is its
 * ciphertext itself, and every other cell the residue `acc * x % m` gives in Python: so for
 * ciphertexts below m (the only ones a peer's check lets through) the results are bit for bit
 * those of the gmpy2 loop this replaces (order does not matter: every product is reduced, and
 * a one-factor product is the factor, itself below m). Folding cells into bins and the derived
 * cell's product (T times the inverse, mpz_invert, of the other cells' product) run on the same
 * Montgomery forms. m must be odd (R invertible mod m): any Paillier or OU modulus is.
 *
 * Why C, and why Montgomery. In Python each product pays an interpreter step, a dict look-up
 * and a new mpz object besides GMP's multiply and division; here the ciphertexts stay in one
 * buffer, each cell's accumulator is k limbs reused in place, and the loop runs without the
 * GIL. Measured on the project's 2-core machine, REDC costs less than the long division of
 * mpz_tdiv_r (which also computes a quotient nobody needs): per product ~1.2x fewer CPU
 * seconds than mpz_mul + mpz_tdiv_r at 2048 and 4096 bits. The conversion into Montgomery form
 * is one division per ciphertext and tree, against ~features / 2 products per row and level.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <string.h>

#if GMP_LIMB_BITS != 64 || GMP_NAIL_BITS != 0
#error "fedacq's histogram kernel expects 64-bit GMP limbs without nails"
#endif
#if PY_BIG_ENDIAN
#error "fedacq's histogram kernel expects a little-endian host (ciphertexts are little-endian limbs)"
#endif

/* An integer buffer read element by element (any signed/unsigned width numpy gives, any stride). */
typedef struct {
    Py_buffer view;
    int held;
    char kind; /* 's' signed, 'u' unsigned */
} IndexBuffer;

static int index_buffer_get(PyObject *obj, IndexBuffer *ib, const char *name) {
    ib->held = 0;
    if (PyObject_GetBuffer(obj, &ib->view, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return -1;
    ib->held = 1;
    const char *fmt = ib->view.format ? ib->view.format : "B";
    if (*fmt == '<' || *fmt == '=' || *fmt == '@')
        fmt++;
    ib->kind = strchr("bhilq", *fmt) ? 's' : strchr("BHILQ", *fmt) ? 'u' : 0;
    if (ib->view.ndim != 1 || !ib->kind || fmt[1] != '\0' ||
        !(ib->view.itemsize == 1 || ib->view.itemsize == 2 || ib->view.itemsize == 4 || ib->view.itemsize == 8)) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D integer array", name);
        return -1;
    }
    return 0;
}

static inline long long index_at(const IndexBuffer *ib, Py_ssize_t i) {
    const char *p = (const char *)ib->view.buf + i * ib->view.strides[0];
    if (ib->kind == 's') {
        switch (ib->view.itemsize) {
        case 1: return *(const int8_t *)p;
        case 2: return *(const int16_t *)p;
        case 4: return *(const int32_t *)p;
        default: return *(const int64_t *)p;
        }
    }
    switch (ib->view.itemsize) {
    case 1: return *(const uint8_t *)p;
    case 2: return *(const uint16_t *)p;
    case 4: return *(const uint32_t *)p;
    default: return (long long)*(const uint64_t *)p; /* above 2^63: negative, rejected as out of range */
    }
}

static void index_buffer_release(IndexBuffer *ib) {
    if (ib->held)
        PyBuffer_Release(&ib->view);
    ib->held = 0;
}

/* -m^-1 mod 2^64 for an odd m0, by Newton's iteration x <- x (2 - m0 x): each step doubles the
 * correct low bits, from 3 (m0 m0 = 1 mod 8 for any odd m0) to 96 after five. */
static mp_limb_t neg_inverse_limb(mp_limb_t m0) {
    mp_limb_t x = m0;
    for (int i = 0; i < 5; i++)
        x *= 2 - m0 * x;
    return -x;
}

/* r = t / 2^(64k) mod m (Montgomery's reduction, REDC), for t < m 2^(64k) of 2k limbs (destroyed).
 * Limb by limb, q = t_j (-m^-1) mod 2^64 makes limb j of t + q m 2^(64j) zero; what is left is
 * (t + Q m) / 2^(64k) < 2m, brought below m by one subtraction. k calls of mpn_addmul_1 cost
 * about one schoolbook k x k product, less than the long division mpz_tdiv_r runs. */
static void redc(mp_limb_t *r, mp_limb_t *t, const mp_limb_t *m, mp_size_t k, mp_limb_t minv) {
    for (mp_size_t j = 0; j < k; j++)
        t[j] = mpn_addmul_1(t + j, m, k, t[j] * minv); /* limb j is now 0: keep the carry there */
    mp_limb_t carry = mpn_add_n(r, t + k, t, k);
    if (carry || mpn_cmp(r, m, k) >= 0)
        mpn_sub_n(r, r, m, k);
}

/* r = a b / R mod m (Montgomery's product); t: 2k limbs of scratch. */
static void mont_mul(mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b, const mp_limb_t *m, mp_size_t k,
                     mp_limb_t minv, mp_limb_t *t) {
    mpn_mul_n(t, a, b, k);
    redc(r, t, m, k, minv);
}

/* r = x R mod m for x below m (into Montgomery form); t: 2k limbs, q: k + 1 limbs of scratch. */
static void mont_in(mp_limb_t *r, const mp_limb_t *x, const mp_limb_t *m, mp_size_t k, mp_limb_t *t, mp_limb_t *q) {
    memset(t, 0, (size_t)k * sizeof(mp_limb_t));
    memcpy(t + k, x, (size_t)k * sizeof(mp_limb_t));
    mpn_tdiv_qr(q, r, 0, t, 2 * k, m, k);
}

/* r = x / R mod m (out of Montgomery form); t: 2k limbs of scratch. */
static void mont_out(mp_limb_t *r, const mp_limb_t *x, const mp_limb_t *m, mp_size_t k, mp_limb_t minv,
                     mp_limb_t *t) {
    memcpy(t, x, (size_t)k * sizeof(mp_limb_t));
    memset(t + k, 0, (size_t)k * sizeof(mp_limb_t));
    redc(r, t, m, k, minv);
}

/* The buffers every call shares: ciphertexts and modulus as k-limb numbers. */
typedef struct {
    Py_buffer cts, mod;
    mp_size_t k;
    Py_ssize_t n_cts;
} Limbs;

static int limbs_get(PyObject *cts_obj, PyObject *mod_obj, int writable, Limbs *l) {
    memset(l, 0, sizeof(*l));
    if (PyObject_GetBuffer(cts_obj, &l->cts, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (PyObject_GetBuffer(mod_obj, &l->mod, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    l->k = l->mod.len / (Py_ssize_t)sizeof(mp_limb_t);
    if (l->k <= 0 || l->mod.len % (Py_ssize_t)sizeof(mp_limb_t) || l->cts.len % l->mod.len) {
        PyErr_SetString(PyExc_ValueError, "ciphertexts and modulus must be whole numbers of the same limb width");
        return -1;
    }
    const mp_limb_t *m = l->mod.buf;
    if (m[l->k - 1] == 0 || !(m[0] & 1)) {
        PyErr_SetString(PyExc_ValueError, "the modulus must be odd and fill its top limb");
        return -1;
    }
    l->n_cts = l->cts.len / l->mod.len;
    return 0;
}

static void limbs_release(Limbs *l) {
    if (l->mod.obj)
        PyBuffer_Release(&l->mod);
    if (l->cts.obj)
        PyBuffer_Release(&l->cts);
}

static PyObject *to_montgomery(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cts_obj, *mod_obj;
    if (!PyArg_ParseTuple(args, "OO", &cts_obj, &mod_obj))
        return NULL;
    Limbs l;
    PyObject *result = NULL;
    if (limbs_get(cts_obj, mod_obj, 1, &l) < 0)
        goto done;
    mp_limb_t *x = l.cts.buf;
    const mp_limb_t *m = l.mod.buf;
    const mp_size_t k = l.k;
    for (Py_ssize_t i = 0; i < l.n_cts; i++) {
        if (mpn_cmp(x + i * k, m, k) >= 0) {
            PyErr_Format(PyExc_ValueError, "ciphertext %zd is not below the modulus", i);
            goto done;
        }
    }
    Py_ssize_t failed = 0;
    Py_BEGIN_ALLOW_THREADS
    mp_limb_t *t = malloc((size_t)(2 * k) * sizeof(mp_limb_t)), *q = malloc((size_t)(k + 1) * sizeof(mp_limb_t));
    if (t && q) {
        for (Py_ssize_t i = 0; i < l.n_cts; i++)
            mont_in(x + i * k, x + i * k, m, k, t, q);
    } else {
        failed = 1;
    }
    free(t);
    free(q);
    Py_END_ALLOW_THREADS
    if (failed)
        PyErr_NoMemory();
    else
        result = Py_NewRef(Py_None);
done:
    limbs_release(&l);
    return result;
}

/* Multiply x (Montgomery form) into accumulator j of acc, or start it with x. */
static inline void accumulate(mp_limb_t *acc, char *started, Py_ssize_t j, const mp_limb_t *x, const mp_limb_t *m,
                              mp_size_t k, mp_limb_t minv, mp_limb_t *t) {
    mp_limb_t *a = acc + j * k;
    if (started[j]) {
        mont_mul(a, a, x, m, k, minv, t);
    } else {
        started[j] = 1;
        memcpy(a, x, (size_t)k * sizeof(mp_limb_t));
    }
}

static PyObject *bin_sums(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cts_obj, *mod_obj, *rows_obj, *cells_obj, *total_obj;
    Py_ssize_t n_cells, radix2, nb1, nb2, skip;
    if (!PyArg_ParseTuple(args, "OOOOnnnnnO", &cts_obj, &mod_obj, &rows_obj, &cells_obj, &n_cells, &radix2, &nb1,
                          &nb2, &skip, &total_obj))
        return NULL;

    Limbs l;
    IndexBuffer rows = {.held = 0}, cells = {.held = 0};
    Py_buffer total = {0};
    int have_cells = cells_obj != Py_None;
    PyObject *result = NULL;
    mp_limb_t *acc = NULL, *sums = NULL, *t = NULL;
    char *started = NULL, *bin_started = NULL;
    mpz_t rest, inv, mz;
    int mpz_ready = 0;

    if (limbs_get(cts_obj, mod_obj, 0, &l) < 0)
        goto done;
    if (index_buffer_get(rows_obj, &rows, "rows") < 0)
        goto done;
    if (have_cells && index_buffer_get(cells_obj, &cells, "cells") < 0)
        goto done;
    const mp_limb_t *base = l.cts.buf, *m = l.mod.buf;
    const mp_size_t k = l.k;
    const Py_ssize_t n = rows.view.shape[0];
    if (!have_cells)
        n_cells = 1;
    if (have_cells && cells.view.shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "rows and cells differ in length");
        goto done;
    }
    if (n_cells <= 0 || skip < -1 || skip >= n_cells || radix2 < 0 || nb1 < 0 || nb2 < 0 || (!radix2 && nb2) ||
        nb1 > n_cells || nb2 > radix2) {
        PyErr_SetString(PyExc_ValueError, "n_cells, radix, bins and skip do not describe one or two features");
        goto done;
    }
    if (skip >= 0) {
        if (total_obj == Py_None || PyObject_GetBuffer(total_obj, &total, PyBUF_C_CONTIGUOUS) < 0 ||
            total.len != l.mod.len) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a derived cell needs the node total as k limbs");
            goto done;
        }
        if (mpn_cmp(total.buf, m, k) >= 0) {
            PyErr_SetString(PyExc_ValueError, "the node total is not below the modulus");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* every index checked before the loop: it cannot fail half-way */
        long long r = index_at(&rows, i), c = have_cells ? index_at(&cells, i) : 0;
        if (r < 0 || r >= l.n_cts) {
            PyErr_Format(PyExc_IndexError, "row %lld out of range (%zd ciphertexts)", r, l.n_cts);
            goto done;
        }
        if (c < 0 || c >= n_cells) {
            PyErr_Format(PyExc_IndexError, "cell %lld out of range (%zd cells)", c, n_cells);
            goto done;
        }
    }
    const Py_ssize_t n_sums = nb1 + nb2;
    acc = PyMem_Malloc((size_t)(n_cells * k) * sizeof(mp_limb_t));
    sums = PyMem_Malloc((size_t)((n_sums + 4) * k) * sizeof(mp_limb_t)); /* + rest, total, 2k of scratch */
    t = PyMem_Malloc((size_t)(3 * k + 1) * sizeof(mp_limb_t));
    started = PyMem_Calloc((size_t)n_cells, 1);
    bin_started = PyMem_Calloc((size_t)n_sums + 1, 1);
    if (!acc || !sums || !t || !started || !bin_started) {
        PyErr_NoMemory();
        goto done;
    }
    const mp_limb_t minv = neg_inverse_limb(m[0]);
    mp_limb_t *rest_m = sums + n_sums * k, *total_m = rest_m + k, *x = total_m + k; /* x: 2k limbs */
    int derived = 0;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t c = have_cells ? (Py_ssize_t)index_at(&cells, i) : 0;
        if (c != skip)
            accumulate(acc, started, c, base + (Py_ssize_t)index_at(&rows, i) * k, m, k, minv, t);
    }
    if (skip >= 0) { /* P(skip) = T / prod_{c != skip} P(c): only the inverse needs the GIL-free mpz layer */
        char any = 0;
        for (Py_ssize_t c = 0; c < n_cells; c++)
            if (started[c])
                accumulate(rest_m, &any, 0, acc + c * k, m, k, minv, t);
        mont_in(total_m, total.buf, m, k, t, x);
        if (any) {
            mont_out(x, rest_m, m, k, minv, t); /* rest, plain */
            derived = 1;                        /* inverted below, with the GIL */
        } else {
            memcpy(acc + skip * k, total_m, (size_t)k * sizeof(mp_limb_t));
            started[skip] = 1;
        }
    }
    Py_END_ALLOW_THREADS

    if (derived) {
        mpz_init(rest);
        mpz_init(inv);
        mpz_ready = 1;
        mpz_roinit_n(mz, m, k);
        mpz_import(rest, (size_t)k, -1, sizeof(mp_limb_t), 0, 0, x);
        if (!mpz_invert(inv, rest, mz)) {
            PyErr_SetString(PyExc_ZeroDivisionError, "the cells' product has no inverse modulo the modulus");
            goto done;
        }
        memset(x, 0, (size_t)k * sizeof(mp_limb_t));
        mpz_export(x, NULL, -1, sizeof(mp_limb_t), 0, 0, inv);
        mp_limb_t *q = PyMem_Malloc((size_t)(k + 1) * sizeof(mp_limb_t));
        if (!q) {
            PyErr_NoMemory();
            goto done;
        }
        mont_in(rest_m, x, m, k, t, q); /* inverse, Montgomery form */
        PyMem_Free(q);
        mont_mul(acc + skip * k, total_m, rest_m, m, k, minv, t);
        started[skip] = 1;
    }

    PyObject *out = PyBytes_FromStringAndSize(NULL, n_sums * k * (Py_ssize_t)sizeof(mp_limb_t));
    if (!out)
        goto done;
    mp_limb_t *dst = (mp_limb_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < n_cells; c++) { /* fold cells into each feature's bins; the missing code is in none */
        if (!started[c])
            continue;
        Py_ssize_t code1 = radix2 ? c / radix2 : c, code2 = radix2 ? c % radix2 : nb2;
        if (code1 < nb1)
            accumulate(sums, bin_started, code1, acc + c * k, m, k, minv, t);
        if (code2 < nb2)
            accumulate(sums, bin_started, nb1 + code2, acc + c * k, m, k, minv, t);
    }
    for (Py_ssize_t b = 0; b < n_sums; b++) {
        if (bin_started[b]) {
            mont_out(dst + b * k, sums + b * k, m, k, minv, t);
        } else { /* an empty bin: the product of nothing */
            memset(dst + b * k, 0, (size_t)k * sizeof(mp_limb_t));
            dst[b * k] = 1;
        }
    }
    Py_END_ALLOW_THREADS
    result = out;

done:
    if (mpz_ready) {
        mpz_clear(rest);
        mpz_clear(inv);
    }
    PyMem_Free(acc);
    PyMem_Free(sums);
    PyMem_Free(t);
    PyMem_Free(started);
    PyMem_Free(bin_started);
    if (total.obj)
        PyBuffer_Release(&total);
    index_buffer_release(&cells);
    index_buffer_release(&rows);
    limbs_release(&l);
    return result;
}

static PyMethodDef methods[] = {
    {"to_montgomery", to_montgomery, METH_VARARGS,
     "to_montgomery(cts, modulus): each ciphertext x, below the modulus m, becomes x 2^(64k) mod m, in place"},
    {"bin_sums", bin_sums, METH_VARARGS,
     "bin_sums(cts, modulus, rows, cells, n_cells, radix2, nb1, nb2, skip, total) -> the bins' products (bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_histkernel",
    "Encrypted histogram bin sums over GMP, Montgomery products (see fedacq.learn.histogram).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__histkernel(void) { return PyModule_Create(&module); }
