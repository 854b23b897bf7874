"""Crypto benchmark: fedacq's Paillier and OU against ``phe`` and SecretFlow ``sf-heu`` (ZPaillier, OU).

Why in one run: the machine's load changes from minute to minute, so only rates
measured side by side, on the same vectors and key size, give honest ratios. Each
operation is timed ``--repeats`` times, alternating the implementations, and the
best rate of each is kept (the run least disturbed by other processes).

``encrypt`` is public-key encryption, what heu's encryptor does;
``encrypt_key_owner`` is the lender encrypting its own gradients with the CRT
path of :meth:`~fedacq.crypto.paillier.PrivateKey.encrypt_raw` (same output
distribution), compared with the same heu figure.

Per-core rates use one process (``workers=1`` for fedacq; heu's scalar API is
single-threaded). Decryption is measured three ways, the ways the protocols call
it: ``decrypt_single`` (one ciphertext per call, as intersection-sum decrypts its
total; heu's scalar decryptor), ``decrypt`` / ``decrypt_batch_1_core`` (a vector on
one core; heu's scalar decryptor in a loop) and ``decrypt_batch`` (a vector with
fedacq's default ``workers=None``, i.e. every core, against heu's numpy decryptor on
its own thread pool). "Packed values decrypted per second" counts values recovered
per second of decryption when several values share one plaintext: fedacq packs
as many slots as fit a 2048-bit plaintext (:class:`~fedacq.crypto.paillier.Packing`,
the same density :func:`~fedacq.crypto.paillier.compress` gives for histogram
sums); heu's own packing (``BatchIntegerEncoder``, two int64 per plaintext) is
its peer. Multi-core encryption compares ``workers=<all cores>`` with ``workers=1``
on the same plaintexts, after warming the pool (each worker builds its table once
per key).

Okamoto–Uchiyama (:mod:`fedacq.crypto.ou`) is measured on the same
plaintexts against sf-heu's OU (same key size), and against fedacq's own
Paillier (``ou_vs_paillier``: the choice :mod:`fedacq.crypto.scheme` offers).
``histogram_add`` is the SecureBoost workload: products of ciphertexts per
(feature, bin) over rows x features with 32 bins, through
:func:`fedacq.learn.histogram.build_histograms` under each fedacq scheme, and
sf-heu's C++ ``feature_wise_bucket_sum`` on its own OU and ZPaillier keys.

Command: ``fedacq bench-crypto --json FILE [--quick]`` (``benchmarks/crypto.py``
runs the same code).
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from typing import Callable

#: (values per op timed, values for phe, values for decryption) by mode.
SIZES = {"full": {"encrypt": 8000, "phe_encrypt": 400, "decrypt": 1000, "phe_decrypt": 400,
                  "add": 40000, "scalar": 4000, "multicore": 24000, "blind": 20000,
                  "hist_rows": 4000, "hist_features": 20},
         "quick": {"encrypt": 400, "phe_encrypt": 40, "decrypt": 60, "phe_decrypt": 40,
                   "add": 4000, "scalar": 300, "multicore": 2000, "blind": 2000,
                   "hist_rows": 300, "hist_features": 4}}

#: bits of each packed value (fixed-point gradients) and how many may be summed.
PACK_SLOT_BITS, PACK_MAX_TERMS = 32, 1 << 20


def _rate(count: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t0)


def _best(rates: dict[str, list[float]]) -> dict[str, float]:
    return {k: max(v) for k, v in rates.items() if v}


def run(key_bits: int = 2048, quick: bool = False, repeats: int = 3, seed: int = 0,
        progress: bool = True) -> dict:
    """Run every measurement; returns the result dict written as JSON."""
    import numpy as np
    import phe
    from heu import phe as hphe
    from tqdm import tqdm

    from fedacq.crypto import ou, parallel
    from fedacq.crypto.paillier import Packing, generate_keypair

    sizes = SIZES["quick" if quick else "full"]
    rng = random.Random(seed)
    pk, sk = generate_keypair(key_bits)
    phe_pub = phe.PaillierPublicKey(int(pk.n))
    phe_priv = phe.PaillierPrivateKey(phe_pub, int(sk.p), int(sk.q))
    kit = hphe.setup(hphe.SchemaType.ZPaillier, key_bits)
    h_enc, h_dec, h_eval = kit.encryptor(), kit.decryptor(), kit.evaluator()
    ou_pk, ou_sk = ou.generate_keypair(key_bits)
    ou_kit = hphe.setup(hphe.SchemaType.OU, key_bits)
    ou_enc, ou_dec, ou_eval = ou_kit.encryptor(), ou_kit.decryptor(), ou_kit.evaluator()

    # The same plaintexts for everyone: 40-bit values, like fixed-point gradients.
    plain = [rng.getrandbits(40) for _ in range(sizes["encrypt"])]
    scalars = [rng.getrandbits(32) for _ in range(sizes["scalar"])]
    table_t0 = time.perf_counter()
    pk._fixed_base_table()  # one-off per key and process, reported separately
    table_seconds = time.perf_counter() - table_t0
    sk._crt_tables()

    ours = pk.encrypt_raw(plain, workers=1)
    h_pts = [kit.plaintext(m) for m in plain]
    h_cts = [h_enc.encrypt(p) for p in h_pts[: max(sizes["decrypt"], sizes["scalar"], 2)]]
    phe_cts = [phe.EncryptedNumber(phe_pub, int(c)) for c in ours.ciphertexts[: sizes["phe_decrypt"]]]
    ou_pk.encrypt_raw(plain[:8], workers=1)  # tables, as for Paillier above
    ou_sk.encrypt_raw(plain[:8], workers=1)
    ou_a, ou_b = ou_pk.encrypt_raw(plain, workers=1), ou_pk.encrypt_raw(plain[::-1], workers=1)
    ou_h_pts = [ou_kit.plaintext(m) for m in plain]
    ou_h_cts = [ou_enc.encrypt(p) for p in ou_h_pts]

    # Packed: as many 32-bit values (guarded for 2^20 terms) as fit one plaintext.
    packing = Packing.for_key(pk, PACK_SLOT_BITS, PACK_MAX_TERMS)
    n_packed = max(sizes["decrypt"] // 4, 4)
    matrix = np.array([[rng.getrandbits(PACK_SLOT_BITS) for _ in range(packing.slots)]
                       for _ in range(n_packed)], dtype=np.int64)
    packed = packing.encrypt(matrix, pk, workers=1)
    h_batch = kit.batch_integer_encoder()
    h_packed = [h_enc.encrypt(h_batch.encode(rng.getrandbits(31), rng.getrandbits(31)))
                for _ in range(n_packed)]

    rates: dict[str, dict[str, list[float]]] = {op: {"fedacq": [], "heu": [], "phe": [], "fedacq_ou": [],
                                                     "heu_ou": []} for op in
                                                ("encrypt", "encrypt_key_owner", "decrypt", "add",
                                                 "scalar_multiply", "packed_decrypt", "decrypt_single",
                                                 "decrypt_batch_1_core", "decrypt_batch")}
    n_add = sizes["add"]
    reps_add = max(1, n_add // len(ours))
    a_cts, b_cts = ours, pk.encrypt_raw(plain[::-1], workers=1)
    h_a, h_b = h_cts, h_cts[::-1]
    n_dec, n_sc = sizes["decrypt"], sizes["scalar"]
    sub = ours.take(range(n_dec))
    sc_vec = ours.take(range(n_sc))
    phe_n = sizes["phe_encrypt"]
    phe_a = phe_cts[: min(len(phe_cts), 200)]

    steps = [
        ("encrypt", "fedacq", len(plain), lambda: pk.encrypt_raw(plain, workers=1)),
        ("encrypt", "heu", len(plain), lambda: [h_enc.encrypt(p) for p in h_pts]),
        ("encrypt", "phe", phe_n, lambda: [phe_pub.raw_encrypt(m) for m in plain[:phe_n]]),
        ("encrypt_key_owner", "fedacq", len(plain), lambda: sk.encrypt_raw(plain, workers=1)),
        ("decrypt", "fedacq", n_dec, lambda: sk.decrypt_raw(sub, workers=1)),
        ("decrypt", "heu", n_dec, lambda: [h_dec.decrypt(c) for c in h_cts[:n_dec]]),
        ("decrypt", "phe", len(phe_cts), lambda: [phe_priv.raw_decrypt(c.ciphertext(False)) for c in phe_cts]),
        ("add", "fedacq", reps_add * len(a_cts), lambda: [a_cts + b_cts for _ in range(reps_add)]),
        ("add", "heu", reps_add * len(h_a),
         lambda: [[h_eval.add(x, y) for x, y in zip(h_a, h_b)] for _ in range(reps_add)]),
        ("add", "phe", 20 * len(phe_a), lambda: [[x + y for x, y in zip(phe_a, phe_a)] for _ in range(20)]),
        ("scalar_multiply", "fedacq", n_sc, lambda: sc_vec.mul_scalar(scalars)),
        ("scalar_multiply", "heu", n_sc, lambda: [h_eval.mul(c, k) for c, k in zip(h_cts, scalars)]),
        ("scalar_multiply", "phe", len(phe_a), lambda: [c * k for c, k in zip(phe_a, scalars)]),
        ("packed_decrypt", "fedacq", n_packed * packing.slots,
         lambda: packing.unpack(sk.decrypt_raw(packed, workers=1))),
        ("packed_decrypt", "heu", 2 * n_packed, lambda: [h_batch.decode(h_dec.decrypt(c)) for c in h_packed]),
        ("encrypt", "fedacq_ou", len(plain), lambda: ou_pk.encrypt_raw(plain, workers=1)),
        ("encrypt", "heu_ou", len(plain), lambda: [ou_enc.encrypt(p) for p in ou_h_pts]),
        ("encrypt_key_owner", "fedacq_ou", len(plain), lambda: ou_sk.encrypt_raw(plain, workers=1)),
        ("decrypt", "fedacq_ou", n_dec, lambda: ou_sk.decrypt_raw(ou_a.take(range(n_dec)), workers=1)),
        ("decrypt", "heu_ou", n_dec, lambda: [ou_dec.decrypt(c) for c in ou_h_cts[:n_dec]]),
        ("add", "fedacq_ou", reps_add * len(ou_a), lambda: [ou_a + ou_b for _ in range(reps_add)]),
        ("add", "heu_ou", reps_add * len(ou_h_cts),
         lambda: [[ou_eval.add(x, y) for x, y in zip(ou_h_cts, ou_h_cts[::-1])] for _ in range(reps_add)]),
    ]
    dec_steps, dec_check = _decryption_steps(sk, ou_sk, plain[:n_dec], key_bits)
    steps += dec_steps
    with tqdm(total=repeats * len(steps) + 2 * repeats, desc="bench-crypto", disable=not progress) as bar:
        for _ in range(repeats):
            for op, impl, count, fn in steps:
                bar.set_postfix_str(f"{op}/{impl}")
                rates[op][impl].append(_rate(count, fn))
                bar.update()

        # Both cores against one, same plaintexts, pool warm (tables built in every worker).
        cores = parallel.cpu_count()
        mc_plain = [rng.getrandbits(40) for _ in range(sizes["multicore"])]
        pk.encrypt_raw(mc_plain[: 64 * cores], workers=cores)
        single, multi = [], []
        for _ in range(repeats):
            bar.set_postfix_str("encrypt/1 core")
            single.append(_rate(len(mc_plain), lambda: pk.encrypt_raw(mc_plain, workers=1)))
            bar.update()
            bar.set_postfix_str(f"encrypt/{cores} cores")
            multi.append(_rate(len(mc_plain), lambda: pk.encrypt_raw(mc_plain, workers=cores)))
            bar.update()

    # Correctness of what was timed (a fast wrong answer is not a result).
    check = sk.decrypt_raw(ours.take(range(8)), workers=1)
    if check != plain[:8] or ou_sk.decrypt_raw(ou_a.take(range(8)), workers=1) != plain[:8]:
        raise RuntimeError("bench-crypto: fedacq decryption mismatch")
    dec_check()
    if not np.array_equal(packing.unpack(sk.decrypt_raw(packed.take([0]), workers=1)), matrix[:1]):
        raise RuntimeError("bench-crypto: packed round trip mismatch")
    if pk.encrypt_raw(mc_plain[:4], workers=cores).public_key != pk:
        raise RuntimeError("bench-crypto: multi-core encryption used another key")

    best = {op: _best(r) for op, r in rates.items()}
    best["encrypt_multicore"] = {"fedacq_1_core": max(single), f"fedacq_{cores}_cores": max(multi)}
    blind = _bench_blinding(sizes["blind"], repeats)
    if blind:
        best["blinding"] = blind
    best["histogram_add"] = _bench_histogram(sizes["hist_rows"], sizes["hist_features"], repeats,
                                             {"paillier": pk, "ou": ou_pk}, rng)

    ratios = {
        "encrypt_vs_heu": best["encrypt"]["fedacq"] / best["encrypt"]["heu"],
        "encrypt_key_owner_vs_heu": best["encrypt_key_owner"]["fedacq"] / best["encrypt"]["heu"],
        "decrypt_vs_heu": best["decrypt"]["fedacq"] / best["decrypt"]["heu"],
        "packed_decrypt_vs_heu": best["packed_decrypt"]["fedacq"] / best["packed_decrypt"]["heu"],
        "add_vs_heu": best["add"]["fedacq"] / best["add"]["heu"],
        "scalar_multiply_vs_heu": best["scalar_multiply"]["fedacq"] / best["scalar_multiply"]["heu"],
        "encrypt_multicore_vs_single": max(multi) / max(single),
        "encrypt_vs_phe": best["encrypt"]["fedacq"] / best["encrypt"]["phe"],
        "decrypt_vs_phe": best["decrypt"]["fedacq"] / best["decrypt"]["phe"],
        "add_vs_phe": best["add"]["fedacq"] / best["add"]["phe"],
        "scalar_multiply_vs_phe": best["scalar_multiply"]["fedacq"] / best["scalar_multiply"]["phe"],
    }
    for op in ("encrypt", "encrypt_key_owner", "decrypt", "add"):
        ratios[f"ou_{op}_vs_paillier"] = best[op]["fedacq_ou"] / best[op]["fedacq"]
    for op in ("encrypt", "decrypt", "add"):
        ratios[f"ou_{op}_vs_heu_ou"] = best[op]["fedacq_ou"] / best[op]["heu_ou"]
    ratios.update(_decrypt_ratios(best))
    hist = best["histogram_add"]
    ratios["histogram_ou_vs_paillier"] = hist["fedacq_ou"] / hist["fedacq_paillier"]
    ratios["histogram_ou_vs_heu_ou"] = hist["fedacq_ou"] / hist["heu_ou"]
    ratios["histogram_paillier_vs_heu_zpaillier"] = hist["fedacq_paillier"] / hist["heu_zpaillier"]
    return {
        "benchmark": "crypto",
        "key_bits": key_bits,
        "quick": quick,
        "repeats": repeats,
        "sizes": sizes,
        "packing": {"slot_bits": PACK_SLOT_BITS, "max_terms": PACK_MAX_TERMS, "slots": packing.slots,
                    "heu_slots": 2},
        "djn": {"exponent_bits": pk.exponent_bits, "table_build_seconds": table_seconds},
        "cores": cores,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_end": list(os.getloadavg())},
        "rates_per_second": best,
        "ratios": ratios,
    }


DECRYPT_OPS = ("decrypt_single", "decrypt_batch_1_core", "decrypt_batch")


def _decryption_steps(sk, ou_sk, plain: list[int], key_bits: int) -> tuple[list, Callable[[], None]]:
    """Timed steps for decryption as the protocols call it, fedacq against sf-heu per scheme.

    ``decrypt_single``: one ciphertext per call (intersection-sum's total; heu's scalar
    decryptor). ``decrypt_batch_1_core``: a vector with ``workers=1`` (its peer is heu's
    scalar decryptor, one core). ``decrypt_batch``: a vector with the default
    ``workers=None`` (every core), against heu's numpy decryptor, which runs on the calling
    thread plus its own pool (2 threads on a 2-core machine). heu's keys are its own, of the
    same size; the plaintexts are the same. Returns the steps and a check that every timed
    path decrypts to ``plain``.
    """
    import numpy as np
    from heu import numpy as hnp
    from heu import phe as hphe

    from fedacq.crypto.paillier import EncryptedVector

    n_single = max(len(plain) // 4, 8)
    fed = {"fedacq": (sk, sk.public_key.encrypt_raw(plain, workers=1)),
           "fedacq_ou": (ou_sk, ou_sk.public_key.encrypt_raw(plain, workers=1))}
    singles = {k: [EncryptedVector(v.public_key, [c]) for c in v.ciphertexts[:n_single]] for k, (_, v) in fed.items()}
    heu_scalar, heu_batch = {}, {}
    for name, schema in (("heu", "ZPaillier"), ("heu_ou", "OU")):
        kit = hphe.setup(getattr(hphe.SchemaType, schema), key_bits)
        enc = kit.encryptor()
        heu_scalar[name] = (kit.decryptor(), [enc.encrypt(kit.plaintext(m)) for m in plain[:n_single]])
        akit = hnp.setup(getattr(hphe.SchemaType, schema), key_bits)
        heu_batch[name] = (akit.decryptor(), akit.encryptor().encrypt(
            akit.array(np.array(plain, dtype=np.int64), hphe.BigintEncoderParams())))
    steps = []
    for (impl, (key, vec)), peer in zip(fed.items(), ("heu", "heu_ou")):
        dec, cts = heu_scalar[peer]
        bdec, bcts = heu_batch[peer]
        steps += [
            ("decrypt_single", impl, n_single, lambda key=key, vs=singles[impl]: [key.decrypt_raw(v, workers=1)
                                                                                for v in vs]),
            ("decrypt_single", peer, n_single, lambda dec=dec, cts=cts: [dec.decrypt(c) for c in cts]),
            ("decrypt_batch_1_core", impl, len(plain), lambda key=key, vec=vec: key.decrypt_raw(vec, workers=1)),
            ("decrypt_batch", impl, len(plain), lambda key=key, vec=vec: key.decrypt_raw(vec)),
            ("decrypt_batch", peer, len(plain), lambda bdec=bdec, bcts=bcts: bdec.decrypt(bcts)),
        ]

    def check() -> None:
        for impl, (key, vec) in fed.items():
            if key.decrypt_raw(vec) != plain or [key.decrypt_raw(v, workers=1)[0] for v in singles[impl]] != \
                    plain[:n_single]:
                raise RuntimeError(f"bench-crypto: {impl} decryption mismatch")
        for name, (bdec, bcts) in heu_batch.items():
            if bdec.decrypt(bcts).to_numpy().ravel().tolist() != plain:
                raise RuntimeError(f"bench-crypto: {name} batch decryption mismatch")

    return steps, check


def _decrypt_ratios(best: dict) -> dict[str, float]:
    ratios = {}
    for impl, peer, label in (("fedacq", "heu", "paillier"), ("fedacq_ou", "heu_ou", "ou")):
        for op in ("decrypt_single", "decrypt_batch"):
            ratios[f"{label}_{op}_vs_heu"] = best[op][impl] / best[op][peer]
        ratios[f"{label}_decrypt_batch_1_core_vs_heu"] = best["decrypt_batch_1_core"][impl] / \
            best["decrypt_single"][peer]
    return ratios


def run_decrypt(key_bits: int = 2048, count: int = 400, repeats: int = 5, seed: int = 0) -> dict:
    """Decryption only (:func:`_decryption_steps`), alternating, best of ``repeats``: the
    "decryption >= 1x sf-heu" figure in about a minute on a 2-core machine."""
    from fedacq.crypto import ou, parallel
    from fedacq.crypto.paillier import generate_keypair

    rng = random.Random(seed)
    plain = [rng.getrandbits(40) for _ in range(count)]
    _, sk = generate_keypair(key_bits)
    _, ou_sk = ou.generate_keypair(key_bits)
    steps, check = _decryption_steps(sk, ou_sk, plain, key_bits)
    rates: dict[str, dict[str, list[float]]] = {op: {} for op in DECRYPT_OPS}
    for _ in range(repeats):
        for op, impl, n, fn in steps:
            rates[op].setdefault(impl, []).append(_rate(n, fn))
    check()
    best = {op: _best(r) for op, r in rates.items()}
    return {"benchmark": "crypto_decrypt", "key_bits": key_bits, "count": count, "repeats": repeats,
            "cores": parallel.cpu_count(), "ou_subgroup_bits": int(ou_sk.t.bit_length()),
            "machine": {"python": platform.python_version(), "loadavg_at_end": list(os.getloadavg())},
            "rates_per_second": best, "ratios": _decrypt_ratios(best)}


def format_decrypt_table(result: dict) -> str:
    r = result["rates_per_second"]
    lines = [f"decryption, {result['key_bits']}-bit keys, values/s (best of {result['repeats']}, "
             f"{result['count']} values, {result['cores']} cores)",
             f"{'':<22}{'fedacq':>10}{'sf-heu':>10}{'ratio':>8}{'fedacq OU':>11}{'heu OU':>10}{'ratio':>8}"]
    for op in DECRYPT_OPS:
        row = r[op]
        peer_op = "decrypt_single" if op == "decrypt_batch_1_core" else op  # heu per core: its scalar decryptor
        hp, ho = r[peer_op]["heu"], r[peer_op]["heu_ou"]
        lines.append(f"{op:<22}{row['fedacq']:>10,.0f}{hp:>10,.0f}{row['fedacq'] / hp:>7.2f}x"
                     f"{row['fedacq_ou']:>11,.0f}{ho:>10,.0f}{row['fedacq_ou'] / ho:>7.2f}x")
    lines.append(f"load average at end: {result['machine']['loadavg_at_end']}")
    return "\n".join(lines)


def _bench_histogram(rows: int, features: int, repeats: int, keys: dict, rng: random.Random) -> dict[str, float]:
    """(feature, bin) ciphertext additions per second per core: the SecureBoost root histogram.

    Bin codes uniform over 32 bins (no dominant bin: the worst case for the
    sparse shortcut); fedacq's kernel per scheme, sf-heu's bucket sum on its own keys.
    """
    import numpy as np
    from heu import numpy as hnp
    from heu import phe as hphe

    from fedacq.learn.histogram import build_histograms

    bins = np.array([[rng.randrange(32) for _ in range(features)] for _ in range(rows)], dtype=np.int8)
    n_bins = np.full(features, 32)
    all_rows = np.arange(rows)
    out: dict[str, list[float]] = {}
    for name, pk in keys.items():
        cts = pk.encrypt_raw([rng.getrandbits(135) for _ in range(rows)], workers=1).ciphertexts
        mod = pk.ciphertext_modulus
        out[f"fedacq_{name}"] = [_rate(rows * features, lambda: build_histograms(cts, mod, bins, n_bins, all_rows))
                                 for _ in range(repeats)]
    mask = np.ones((1, rows), dtype=np.int8)
    for schema in ("OU", "ZPaillier"):
        kit = hnp.setup(getattr(hphe.SchemaType, schema), keys["paillier"].n_bits)
        h_cts = kit.encryptor().encrypt(kit.array(np.array([[rng.getrandbits(40)] for _ in range(rows)]),
                                                  hphe.BigintEncoderParams()))
        ev = kit.evaluator()
        out[f"heu_{schema.lower()}"] = [
            _rate(rows * features, lambda: ev.feature_wise_bucket_sum(h_cts, mask, bins, 32, False))
            for _ in range(repeats)]
    return _best(out)


def _bench_blinding(count: int, repeats: int) -> dict[str, float]:
    """X25519 blinding rates from fedacq.crypto.ecdh (the PSI engineer's module), per core."""
    try:
        from fedacq.crypto.ecdh import BlindingKey
    except ImportError:
        return {}
    key = BlindingKey.generate()
    salt = os.urandom(16)
    ids = [f"user-{i}".encode() for i in range(count)]
    points = key.blind_ids(ids, salt, b"bench", workers=1)
    other = BlindingKey.generate()
    hash_blind, reblind = [], []
    for _ in range(repeats):
        hash_blind.append(_rate(count, lambda: key.blind_ids(ids, salt, b"bench", workers=1)))
        reblind.append(_rate(count, lambda: other.reblind(points, workers=1)))
    return {"hash_and_blind": max(hash_blind), "reblind": max(reblind)}


def format_table(result: dict) -> str:
    """The human-readable summary printed by the command."""
    r = result["rates_per_second"]
    lines = [f"Paillier {result['key_bits']}-bit, ops/s per core (best of {result['repeats']}"
             f"{', quick sizes' if result['quick'] else ''})",
             f"{'operation':<18}{'fedacq':>12}{'sf-heu':>12}{'phe':>12}{'vs heu':>9}{'vs phe':>9}"]
    for op in ("encrypt", "encrypt_key_owner", "decrypt", "add", "scalar_multiply", "packed_decrypt",
               "decrypt_single", "decrypt_batch"):
        row = dict(r["encrypt"], fedacq=r[op]["fedacq"]) if op == "encrypt_key_owner" else r[op]
        vs_heu = row["fedacq"] / row["heu"]
        vs_phe = f"{row['fedacq'] / row['phe']:>8.1f}x" if "phe" in row else f"{'-':>9}"
        phe_rate = f"{row['phe']:>12,.0f}" if "phe" in row else f"{'-':>12}"
        lines.append(f"{op:<18}{row['fedacq']:>12,.0f}{row['heu']:>12,.0f}{phe_rate}{vs_heu:>8.1f}x{vs_phe}")
    mc = r["encrypt_multicore"]
    lines.append("multi-core encrypt: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in mc.items()) +
                 f" -> {result['ratios']['encrypt_multicore_vs_single']:.2f}x")
    if "blinding" in r:
        lines.append("X25519 blinding (fedacq.crypto.ecdh): " +
                     ", ".join(f"{k} {v:,.0f}/s" for k, v in r["blinding"].items()))
    lines.append(f"packed: {result['packing']['slots']} values per plaintext (heu batch encoder: 2); "
                 f"DJN exponent {result['djn']['exponent_bits']} bits, table built in "
                 f"{result['djn']['table_build_seconds']:.2f} s")
    lines.append(f"OU {result['key_bits']}-bit (fedacq.crypto.ou) vs sf-heu OU and fedacq Paillier, ops/s per core")
    lines.append(f"{'operation':<18}{'fedacq OU':>12}{'sf-heu OU':>12}{'Paillier':>12}{'vs heu OU':>11}{'vs Pai.':>9}")
    for op in ("encrypt", "encrypt_key_owner", "decrypt", "add", "decrypt_single", "decrypt_batch"):
        row = r[op]
        heu_ou = row.get("heu_ou") or r["encrypt"]["heu_ou"]
        lines.append(f"{op:<18}{row['fedacq_ou']:>12,.0f}{heu_ou:>12,.0f}{row['fedacq']:>12,.0f}"
                     f"{row['fedacq_ou'] / heu_ou:>10.1f}x{row['fedacq_ou'] / row['fedacq']:>8.1f}x")
    b1 = r["decrypt_batch_1_core"]
    lines.append(f"decrypt_batch on one core: Paillier {b1['fedacq']:,.0f}/s, OU {b1['fedacq_ou']:,.0f}/s "
                 f"(decrypt_batch: every core, against heu's numpy decryptor on its threads)")
    lines.append("histogram additions/s per core (32 bins): " +
                 ", ".join(f"{k} {v:,.0f}" for k, v in r["histogram_add"].items()))
    lines.append("ratios: " + json.dumps({k: round(v, 2) for k, v in result["ratios"].items()}))
    return "\n".join(lines)
