"""Regenerate the boost service's protobuf/gRPC modules from ``protocols/boost.proto``.

Run ``python -m fedacq.activate._pb.regenerate`` after editing the .proto. grpc_tools emits
``import boost_pb2 as boost__pb2`` (an absolute import of a top-level module), which breaks
inside a package; it is rewritten to a relative import so the generated code is importable
as ``fedacq.activate._pb``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parents[2] / "protocols"


def main() -> int:
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={HERE}", f"--pyi_out={HERE}",
            f"--grpc_python_out={HERE}", str(PROTO_DIR / "boost.proto")]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    grpc_file = HERE / "boost_pb2_grpc.py"
    text = grpc_file.read_text()
    fixed = re.sub(r"^import boost_pb2 as", "from . import boost_pb2 as", text, flags=re.M)
    if fixed == text:
        print(f"{grpc_file}: expected an absolute 'import boost_pb2' to rewrite", file=sys.stderr)
        return 1
    grpc_file.write_text(fixed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
