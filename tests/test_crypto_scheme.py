"""Tests of fedacq.crypto.scheme: keys by scheme name, a peer's key checked against the policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedacq.crypto import scheme
from fedacq.crypto.paillier import Packing, compress, decompress
from fedacq.learn.histogram import GradientCodec, PackingLayout, build_histograms, cumulative


@pytest.fixture(scope="module", params=["paillier", "ou"])
def keys(request):
    # Test-only small keys (insecure_test_key=True): the code paths of 2048-bit keys, faster.
    return scheme.generate_keypair(request.param, 768, insecure_test_key=True)


def test_unknown_scheme_and_small_keys_refused():
    with pytest.raises(ValueError, match="unknown additive scheme"):
        scheme.generate_keypair("rsa", 2048)
    for name in scheme.SCHEMES:
        assert scheme.min_key_bits(name) == 2048
        with pytest.raises(ValueError, match="refused"):
            scheme.generate_keypair(name, 1024)


def test_peer_key_checked_against_policy(keys):
    pk, sk = keys
    name = pk.scheme
    got = scheme.peer_public_key(pk.to_json(), scheme=name, allowed=[name], min_bits=768, key_bits=768)
    assert got == pk
    assert scheme.private_key_from_json(name, sk.to_json()).public_key == pk
    with pytest.raises(ValueError, match="not in this node's policy"):
        scheme.peer_public_key(pk.to_json(), scheme=name, allowed=["other"], min_bits=768)
    with pytest.raises(ValueError, match="accepts at least 2048"):
        scheme.peer_public_key(pk.to_json(), scheme=name, allowed=[name], min_bits=2048)
    with pytest.raises(ValueError, match="announced 1024"):
        scheme.peer_public_key(pk.to_json(), scheme=name, allowed=[name], min_bits=768, key_bits=1024)
    other = "ou" if name == "paillier" else "paillier"
    with pytest.raises(ValueError, match="must have kty"):  # never guessed from the JSON
        scheme.peer_public_key(pk.to_json(), scheme=other, allowed=[other], min_bits=768, what="sb.hello")
    with pytest.raises(ValueError, match="sb.hello: not valid JSON"):
        scheme.peer_public_key("{", scheme=name, allowed=[name], min_bits=768, what="sb.hello")
    with pytest.raises(ValueError, match="sb.hello"):
        bad = dict(json.loads(pk.to_json()), n="AQ")
        scheme.peer_public_key(json.dumps(bad), scheme=name, allowed=[name], min_bits=768, what="sb.hello")


def test_the_same_protocol_code_runs_on_either_key(keys):
    # The SecureBoost path end to end on one key: pack, encrypt, histogram, compress, decrypt, decode.
    pk, sk = keys
    rng = np.random.default_rng(1)
    rows = 40
    g, h = rng.normal(size=rows), rng.random(rows)
    layout = PackingLayout.for_rows(rows, frac_bits=16)
    codec = GradientCodec(layout)
    cts = pk.encrypt_raw(codec.encode(g, h, np.ones(rows, dtype=bool)), workers=1).ciphertexts
    bins = rng.integers(-1, 4, size=(rows, 2))
    hist = build_histograms(cts, pk.ciphertext_modulus, bins, np.array([4, 4]), np.arange(rows))
    flat = cumulative(hist, pk.ciphertext_modulus)
    from fedacq.crypto.paillier import EncryptedVector

    packed = compress(EncryptedVector(pk, flat), layout.entry_bits)
    entries = decompress(sk.decrypt_raw(packed, workers=1), layout.entry_bits, len(flat), pk)
    G, H, count = codec.decode(entries)
    for f in range(2):
        for b in range(4):
            sel = (bins[:, f] >= 0) & (bins[:, f] <= b)
            assert count[4 * f + b] == sel.sum()
            assert abs(G[4 * f + b] - g[sel].sum()) < 1e-3 and abs(H[4 * f + b] - h[sel].sum()) < 1e-3
    packing = Packing.for_key(pk, 16, 4)
    assert packing.total_bits <= pk.plaintext_bits
