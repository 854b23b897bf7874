#!/bin/sh
# Regenerate fedacq/link/_pb/ from protocols/fedacq.proto.
# grpc_tools writes absolute imports ("import fedacq_pb2"); they are rewritten to
# package-relative ones so the generated modules work inside the fedacq package.
set -eu
cd "$(dirname "$0")/.."
out=fedacq/link/_pb
python -m grpc_tools.protoc -Iprotocols --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" protocols/fedacq.proto
sed -i 's/^import fedacq_pb2 as /from . import fedacq_pb2 as /' "$out/fedacq_pb2_grpc.py"
