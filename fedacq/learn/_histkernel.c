/* The encrypted histogram kernel's inner loop: a feature group's bin sums over a node's rows, in C.
 *
 * to_table(cts, modulus) -> bytes
 *   once per tree: the ciphertexts (each below the modulus m, `k` 64-bit limbs, least significant first,
 *   a C-contiguous buffer of k * N limbs: numpy uint64 of shape (N, k)) as the table bin_sums reads:
 *   each x as x R mod m (Montgomery form, R = 2^(27 L)) in L digits of 27 bits, one uint32 each
 * bin_sums(table, modulus, rows, cells, n_cells, radix2, nb1, nb2, skip, total) -> bytes
 *   table    what to_table returned
 *   modulus  m (Paillier n^2, OU n; odd) as `k` limbs, the same layout as the ciphertexts
 *   rows     a node's row indices (any integer buffer, 1-D, strided allowed)
 *   cells    each row's cell (same length as rows), below n_cells, or None: every row in cell 0
 *   radix2   0 for one feature (a cell is its bin code), else a pair's second radix: cell c holds
 *            codes (c / radix2, c % radix2)
 *   nb1, nb2 bins of the first and second feature (a code >= its bins, "missing", is in none)
 *   skip     a cell derived instead of accumulated (-1: none): P(skip) = total / prod_{c != skip} P(c),
 *            `total` (the product over all the node's rows, k limbs, below m) with one inverse
 *   Returns the nb1 + nb2 bin sums S(b) = prod_{cells c with code b} P(c) mod m, as k-limb
 *   integers end to end (an empty bin: 1), where P(c) = prod_{i: cells[i] = c} x_{rows[i]}.
 *   The node total itself is bin_sums(table, modulus, rows, None, 1, 0, 1, 0, -1, None).
 * simd(enabled=None) -> bool
 *   whether products run on AVX2 (the default where the CPU has it); False forces the portable
 *   loop, which computes the same digits (tests compare the two)
 *
 * The products are fedacq/crypto/_lanes.h's (Montgomery form, 27-bit digits, four lanes).
 *
 * Four products at once. Every accumulator (a cell, a bin, the node total) is held in four lane
 * copies: the k-th product of a batch goes into copy k of its target, so a batch never holds one
 * target twice, whatever the rows' cells. A copy's first factor is taken, not multiplied; at the
 * end the copies are multiplied together (two rounds, four targets a batch). A target of r factors
 * in c started copies costs (r - c) + (c - 1) = r - 1 products: what one accumulator costs, so the
 * planner's counts (fedacq.learn.histogram) are unchanged. The ciphertexts stay in one buffer, the
 * loop runs without the GIL, and there is no Python object per ciphertext or cell.
 */
#include "_lanes.h"

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

/* Accumulators of L uint32 digits (Montgomery form), each target in LANES copies, and a batch of up to
 * four pending products dst = x y (distinct dst within a batch). */
typedef struct {
    const Mod *M;
    uint32_t *acc;  /* n_targets x LANES x L */
    char *started;  /* n_targets x LANES */
    Py_ssize_t n_targets;
    int fill;
    uint32_t *dst[LANES];
    const uint32_t *x[LANES], *y[LANES];
} Accumulators;

static int acc_init(Accumulators *A, const Mod *M, Py_ssize_t n_targets) {
    memset(A, 0, sizeof(*A));
    A->M = M;
    A->n_targets = n_targets;
    A->acc = PyMem_RawMalloc((size_t)n_targets * LANES * (size_t)M->L * sizeof(uint32_t));
    A->started = PyMem_RawCalloc((size_t)n_targets * LANES, 1);
    return A->acc && A->started ? 0 : -1;
}

static void acc_release(Accumulators *A) {
    PyMem_RawFree(A->acc);
    PyMem_RawFree(A->started);
    A->acc = NULL;
    A->started = NULL;
}

static inline uint32_t *acc_copy(const Accumulators *A, Py_ssize_t target, int lane) {
    return A->acc + ((size_t)target * LANES + (size_t)lane) * (size_t)A->M->L;
}

/* Run the pending products (a short batch leaves its idle lanes' results unused). */
static void acc_flush(Accumulators *A) {
    if (!A->fill)
        return;
    const int L = A->M->L;
    uint64_t *a = A->M->scratch, *b = a + LANES * L, *r = b + LANES * L, *t = r + LANES * L;
    for (int lane = 0; lane < A->fill; lane++) {
        const uint32_t *x = A->x[lane], *y = A->y[lane];
        for (int j = 0; j < L; j++) {
            a[LANES * j + lane] = x[j];
            b[LANES * j + lane] = y[j];
        }
    }
    mont4(r, a, b, A->M, t);
    for (int lane = 0; lane < A->fill; lane++) {
        uint32_t *d = A->dst[lane];
        for (int j = 0; j < L; j++)
            d[j] = (uint32_t)r[LANES * j + lane];
    }
    A->fill = 0;
}

static inline void acc_product(Accumulators *A, uint32_t *dst, const uint32_t *x, const uint32_t *y) {
    A->dst[A->fill] = dst;
    A->x[A->fill] = x;
    A->y[A->fill] = y;
    if (++A->fill == LANES)
        acc_flush(A);
}

/* Multiply x (Montgomery form, L digits) into `target`: into the copy of the batch's next lane, or start
 * that copy with x. */
static inline void acc_add(Accumulators *A, Py_ssize_t target, const uint32_t *x) {
    const int lane = A->fill;
    uint32_t *copy = acc_copy(A, target, lane);
    char *st = A->started + (size_t)target * LANES + (size_t)lane;
    if (*st) {
        acc_product(A, copy, copy, x);
    } else {
        *st = 1;
        memcpy(copy, x, (size_t)A->M->L * sizeof(uint32_t));
    }
}

/* Multiply each target's started copies into its copy 0 (rounds: 0 1, 2 3, then 0 2). */
static void acc_merge(Accumulators *A) {
    const size_t bytes = (size_t)A->M->L * sizeof(uint32_t);
    acc_flush(A);
    for (int step = 1; step < LANES; step *= 2) {
        for (Py_ssize_t g = 0; g < A->n_targets; g++) {
            char *st = A->started + (size_t)g * LANES;
            for (int lane = 0; lane + step < LANES; lane += 2 * step) {
                if (!st[lane + step])
                    continue;
                uint32_t *to = acc_copy(A, g, lane), *from = acc_copy(A, g, lane + step);
                if (st[lane])
                    acc_product(A, to, to, from);
                else
                    memcpy(to, from, bytes);
                st[lane] = 1;
                st[lane + step] = 0;
            }
        }
        acc_flush(A);
    }
}

static inline int acc_has(const Accumulators *A, Py_ssize_t target) { return A->started[(size_t)target * LANES]; }

/* Leave Montgomery form (leave_form) for up to four values held as L uint32 digits each. */
static void from_form(mp_limb_t **out, const uint32_t **x, int count, const Mod *M) {
    const int L = M->L;
    uint64_t *a = M->scratch, *r = a + 2 * LANES * L, *t = r + LANES * L;
    for (int lane = 0; lane < count; lane++)
        for (int j = 0; j < L; j++)
            a[LANES * j + lane] = x[lane][j];
    leave_form(out, count, a, M, r, t);
}

static PyObject *bin_sums(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *table_obj, *mod_obj, *rows_obj, *cells_obj, *total_obj;
    Py_ssize_t n_cells, radix2, nb1, nb2, skip;
    if (!PyArg_ParseTuple(args, "OOOOnnnnnO", &table_obj, &mod_obj, &rows_obj, &cells_obj, &n_cells, &radix2, &nb1,
                          &nb2, &skip, &total_obj))
        return NULL;

    Py_buffer table = {0}, mod = {0}, total = {0};
    Mod M = {0};
    IndexBuffer rows = {.held = 0}, cells = {.held = 0};
    Accumulators cell_acc = {0}, bin_acc = {0}, rest_acc = {0};
    int have_cells = cells_obj != Py_None;
    PyObject *result = NULL;
    mp_limb_t *limbs = NULL;
    uint32_t *derived = NULL;

    if (mod_get(mod_obj, &mod, &M) < 0 || PyObject_GetBuffer(table_obj, &table, PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    const mp_size_t k = M.k;
    const int L = M.L;
    const Py_ssize_t row_bytes = L * (Py_ssize_t)sizeof(uint32_t);
    if (table.len % row_bytes) {
        PyErr_SetString(PyExc_ValueError, "the table is not a whole number of this modulus's rows (see to_table)");
        goto done;
    }
    const Py_ssize_t n_cts = table.len / row_bytes;
    const uint32_t *base = table.buf;
    if (index_buffer_get(rows_obj, &rows, "rows") < 0)
        goto done;
    if (have_cells && index_buffer_get(cells_obj, &cells, "cells") < 0)
        goto done;
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
            total.len != mod.len) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a derived cell needs the node total as k limbs");
            goto done;
        }
        if (mpn_cmp(total.buf, M.limbs, k) >= 0) {
            PyErr_SetString(PyExc_ValueError, "the node total is not below the modulus");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* every index checked before the loop: it cannot fail half-way */
        long long r = index_at(&rows, i), c = have_cells ? index_at(&cells, i) : 0;
        if (r < 0 || r >= n_cts) {
            PyErr_Format(PyExc_IndexError, "row %lld out of range (%zd ciphertexts)", r, n_cts);
            goto done;
        }
        if (c < 0 || c >= n_cells) {
            PyErr_Format(PyExc_IndexError, "cell %lld out of range (%zd cells)", c, n_cells);
            goto done;
        }
    }
    const Py_ssize_t n_sums = nb1 + nb2;
    limbs = PyMem_Malloc((size_t)(4 * k + L + 8) * sizeof(mp_limb_t));
    derived = PyMem_Malloc((size_t)(2 * L) * sizeof(uint32_t));
    if (acc_init(&cell_acc, &M, n_cells) < 0 || acc_init(&bin_acc, &M, n_sums ? n_sums : 1) < 0 ||
        acc_init(&rest_acc, &M, 1) < 0 || !limbs || !derived) {
        PyErr_NoMemory();
        goto done;
    }
    int invert = 0;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t c = have_cells ? (Py_ssize_t)index_at(&cells, i) : 0;
        if (c != skip)
            acc_add(&cell_acc, c, base + (Py_ssize_t)index_at(&rows, i) * L);
    }
    acc_merge(&cell_acc);
    if (skip >= 0) { /* P(skip) = T / prod_{c != skip} P(c): the inverse below, with the GIL (mpz) */
        for (Py_ssize_t c = 0; c < n_cells; c++)
            if (acc_has(&cell_acc, c))
                acc_add(&rest_acc, 0, acc_copy(&cell_acc, c, 0));
        acc_merge(&rest_acc);
        to_form(derived + L, total.buf, &M, limbs, limbs + 2 * k + 4); /* T R */
        if (acc_has(&rest_acc, 0)) {
            const uint32_t *from[1] = {acc_copy(&rest_acc, 0, 0)};
            mp_limb_t *to[1] = {limbs};
            from_form(to, from, 1, &M); /* the rest, plain */
            invert = 1;
        } else { /* every row in the skipped cell: it is the total */
            memcpy(acc_copy(&cell_acc, skip, 0), derived + L, (size_t)L * sizeof(uint32_t));
            cell_acc.started[skip * LANES] = 1;
        }
    }
    Py_END_ALLOW_THREADS

    if (invert) {
        mpz_t rest, inv, mz;
        mpz_init(rest);
        mpz_init(inv);
        mpz_roinit_n(mz, M.limbs, k);
        mpz_import(rest, (size_t)k, -1, sizeof(mp_limb_t), 0, 0, limbs);
        int ok = mpz_invert(inv, rest, mz);
        if (ok) {
            memset(limbs, 0, (size_t)k * sizeof(mp_limb_t));
            mpz_export(limbs, NULL, -1, sizeof(mp_limb_t), 0, 0, inv);
        }
        mpz_clear(rest);
        mpz_clear(inv);
        if (!ok) {
            PyErr_SetString(PyExc_ZeroDivisionError, "the cells' product has no inverse modulo the modulus");
            goto done;
        }
        to_form(derived, limbs, &M, limbs + k, limbs + 3 * k + 4); /* rest^-1 R */
        uint32_t *cell = acc_copy(&cell_acc, skip, 0);
        acc_product(&cell_acc, cell, derived + L, derived);
        acc_flush(&cell_acc);
        cell_acc.started[skip * LANES] = 1;
    }

    PyObject *out = PyBytes_FromStringAndSize(NULL, n_sums * k * (Py_ssize_t)sizeof(mp_limb_t));
    if (!out)
        goto done;
    mp_limb_t *dst = (mp_limb_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < n_cells; c++) { /* fold cells into each feature's bins; the missing code is in none */
        if (!acc_has(&cell_acc, c))
            continue;
        Py_ssize_t code1 = radix2 ? c / radix2 : c, code2 = radix2 ? c % radix2 : nb2;
        if (code1 < nb1)
            acc_add(&bin_acc, code1, acc_copy(&cell_acc, c, 0));
        if (code2 < nb2)
            acc_add(&bin_acc, nb1 + code2, acc_copy(&cell_acc, c, 0));
    }
    acc_merge(&bin_acc);
    const uint32_t *from[LANES];
    mp_limb_t *to[LANES];
    int count = 0;
    for (Py_ssize_t b = 0; b < n_sums; b++) {
        if (acc_has(&bin_acc, b)) {
            from[count] = acc_copy(&bin_acc, b, 0);
            to[count++] = dst + b * k;
            if (count == LANES) {
                from_form(to, from, count, &M);
                count = 0;
            }
        } else { /* an empty bin: the product of nothing */
            memset(dst + b * k, 0, (size_t)k * sizeof(mp_limb_t));
            dst[b * k] = 1;
        }
    }
    if (count)
        from_form(to, from, count, &M);
    Py_END_ALLOW_THREADS
    result = out;

done:
    acc_release(&cell_acc);
    acc_release(&bin_acc);
    acc_release(&rest_acc);
    PyMem_Free(limbs);
    PyMem_Free(derived);
    mod_release(&M);
    if (total.obj)
        PyBuffer_Release(&total);
    index_buffer_release(&cells);
    index_buffer_release(&rows);
    if (table.obj)
        PyBuffer_Release(&table);
    if (mod.obj)
        PyBuffer_Release(&mod);
    return result;
}

static PyMethodDef methods[] = {
    {"to_table", to_table, METH_VARARGS,
     "to_table(cts, modulus) -> the ciphertexts (each below the modulus) as the kernel's Montgomery-form table"},
    {"bin_sums", bin_sums, METH_VARARGS,
     "bin_sums(table, modulus, rows, cells, n_cells, radix2, nb1, nb2, skip, total) -> the bins' products (bytes)"},
    {"simd", simd, METH_VARARGS, "simd(enabled=None) -> whether products run on AVX2 (False: the portable loop)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_histkernel",
    "Encrypted histogram bin sums, four Montgomery products at a time (see fedacq.learn.histogram).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__histkernel(void) {
    mont4 = best_mont4();
    return PyModule_Create(&module);
}
