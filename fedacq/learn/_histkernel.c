/* The encrypted histogram kernel's inner loop: products of ciphertexts per cell, in C over GMP.
 *
 * to_montgomery(cts, modulus)
 *   once per tree: each ciphertext x (below the modulus m) becomes x R mod m, R = 2^(64k), in place
 * cell_products(cts, modulus, rows, cells, n_cells, skip) -> (present, products)
 *   cts      the tree's ciphertexts in Montgomery form, each as `k` 64-bit limbs, least significant
 *            first (a C-contiguous buffer of k * N limbs: numpy uint64 of shape (N, k))
 *   modulus  the ciphertext modulus m (Paillier n^2, OU n; odd) as `k` limbs, the same layout
 *   rows     a node's row indices (any integer buffer, 1-D, strided allowed)
 *   cells    each row's cell (same length as rows), or None: every row in cell 0
 *   n_cells  number of cells; skip: a cell whose rows are left out (-1: none)
 *   For every non-empty cell c, in increasing order, P(c) = prod_{i: cells[i] = c} x_{rows[i]} mod m:
 *   `present` lists the cells, `products` holds their P(c) as k-limb integers end to end (bytes).
 *
 * The math. Montgomery's product of a R and b R (both below m) is (a R)(b R) / R mod m = (a b) R:
 * one k x k multiply (mpn_mul_n) and one reduction REDC(t) = t / R mod m, which adds to t the
 * multiple q m (q < R, found limb by limb: k calls of mpn_addmul_1) that makes its low k limbs
 * zero, drops them, and subtracts m once if needed (t < m^2 gives a result below 2m). A cell
 * keeps its product in this form, P R, from its first row (x R, no product) to its last; one
 * REDC at the end gives P R / R = P, the canonical residue below m. A one-row cell is its
 * ciphertext itself, and every other cell the residue `acc * x % m` gives in Python: so for
 * ciphertexts below m (the only ones a peer's check lets through) the results are bit for bit
 * those of the gmpy2 loop this replaces. m must be odd (R invertible mod m): any Paillier or OU
 * modulus is.
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
        for (Py_ssize_t i = 0; i < l.n_cts; i++) { /* x 2^(64k) mod m */
            memset(t, 0, (size_t)k * sizeof(mp_limb_t));
            memcpy(t + k, x + i * k, (size_t)k * sizeof(mp_limb_t));
            mpn_tdiv_qr(q, x + i * k, 0, t, 2 * k, m, k);
        }
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

static PyObject *cell_products(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cts_obj, *mod_obj, *rows_obj, *cells_obj;
    Py_ssize_t n_cells, skip;
    if (!PyArg_ParseTuple(args, "OOOOnn", &cts_obj, &mod_obj, &rows_obj, &cells_obj, &n_cells, &skip))
        return NULL;

    Limbs l;
    IndexBuffer rows = {.held = 0}, cells = {.held = 0};
    int have_cells = cells_obj != Py_None;
    PyObject *result = NULL;
    mp_limb_t *acc = NULL, *t = NULL;
    Py_ssize_t *slot = NULL;

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
    if (n_cells <= 0 || skip < -1 || skip >= n_cells) {
        PyErr_SetString(PyExc_ValueError, "n_cells must be positive and skip a cell or -1");
        goto done;
    }
    /* every index checked before the loop (it cannot fail half-way); cells numbered as first met */
    slot = PyMem_Malloc((size_t)n_cells * sizeof(Py_ssize_t));
    if (!slot) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c < n_cells; c++)
        slot[c] = -1;
    Py_ssize_t present = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long r = index_at(&rows, i), c = have_cells ? index_at(&cells, i) : 0;
        if (r < 0 || r >= l.n_cts) {
            PyErr_Format(PyExc_IndexError, "row %lld out of range (%zd ciphertexts)", r, l.n_cts);
            goto done;
        }
        if (c < 0 || c >= n_cells) {
            PyErr_Format(PyExc_IndexError, "cell %lld out of range (%zd cells)", c, n_cells);
            goto done;
        }
        if (c != skip && slot[c] < 0)
            slot[c] = present++;
    }
    acc = PyMem_Malloc((size_t)(present * k + 1) * sizeof(mp_limb_t));
    t = PyMem_Malloc((size_t)(2 * k) * sizeof(mp_limb_t));
    char *started = PyMem_Calloc((size_t)present + 1, 1);
    if (!acc || !t || !started) {
        PyMem_Free(started);
        PyErr_NoMemory();
        goto done;
    }
    const mp_limb_t minv = neg_inverse_limb(m[0]);

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t c = have_cells ? (Py_ssize_t)index_at(&cells, i) : 0;
        if (c == skip)
            continue;
        mp_limb_t *a = acc + slot[c] * k;
        const mp_limb_t *x = base + (Py_ssize_t)index_at(&rows, i) * k;
        if (!started[slot[c]]) {
            started[slot[c]] = 1;
            memcpy(a, x, (size_t)k * sizeof(mp_limb_t));
        } else { /* (P R)(x R) / R = (P x) R */
            mpn_mul_n(t, a, x, k);
            redc(a, t, m, k, minv);
        }
    }
    for (Py_ssize_t j = 0; j < present; j++) { /* out of Montgomery form: (P R) / R */
        memcpy(t, acc + j * k, (size_t)k * sizeof(mp_limb_t));
        memset(t + k, 0, (size_t)k * sizeof(mp_limb_t));
        redc(acc + j * k, t, m, k, minv);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(started);

    PyObject *cell_list = PyList_New(present);
    PyObject *out = PyBytes_FromStringAndSize(NULL, present * k * (Py_ssize_t)sizeof(mp_limb_t));
    if (!cell_list || !out) {
        Py_XDECREF(cell_list);
        Py_XDECREF(out);
        goto done;
    }
    char *dst = PyBytes_AS_STRING(out);
    Py_ssize_t j = 0;
    for (Py_ssize_t c = 0; c < n_cells; c++) { /* in increasing cell order */
        if (slot[c] < 0)
            continue;
        PyObject *ci = PyLong_FromSsize_t(c);
        if (!ci) {
            Py_DECREF(cell_list);
            Py_DECREF(out);
            goto done;
        }
        PyList_SET_ITEM(cell_list, j, ci);
        memcpy(dst + j * k * (Py_ssize_t)sizeof(mp_limb_t), acc + slot[c] * k, (size_t)k * sizeof(mp_limb_t));
        j++;
    }
    result = Py_BuildValue("(NN)", cell_list, out);

done:
    PyMem_Free(acc);
    PyMem_Free(t);
    PyMem_Free(slot);
    index_buffer_release(&cells);
    index_buffer_release(&rows);
    limbs_release(&l);
    return result;
}

static PyMethodDef methods[] = {
    {"to_montgomery", to_montgomery, METH_VARARGS,
     "to_montgomery(cts, modulus): each ciphertext x, below the modulus m, becomes x 2^(64k) mod m, in place"},
    {"cell_products", cell_products, METH_VARARGS,
     "cell_products(cts, modulus, rows, cells, n_cells, skip) -> (present cells, products as k-limb integers)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_histkernel",
    "Products of ciphertexts per histogram cell over GMP (see fedacq.learn.histogram).", -1, methods,
};

PyMODINIT_FUNC PyInit__histkernel(void) { return PyModule_Create(&module); }
