"""fedacq: privacy-preserving joint modeling for credit customer acquisition.

Two parties — a lender (labels, Paillier private key) and an ad platform (features,
whole user base) — align users, train models on encrypted gradients, score, activate
and measure, without either side's raw data leaving its premises. See DESIGN.md.
"""

__version__ = "0.1.0"

# gRPC reads its TLS 1.2 cipher suites when grpc is first imported: set them before anything can.
from fedacq.crypto import tls as _tls  # noqa: E402,F401
