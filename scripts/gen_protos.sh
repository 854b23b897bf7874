#!/bin/sh
# Regenerate the Python modules of protocols/*.proto: fedacq.proto -> fedacq/link/_pb/,
# boost.proto -> fedacq/activate/_pb/.
#
# Use grpcio-tools 1.72.1 (protoc 30, Python gencode 6.30): generated code loads only with a
# protobuf runtime of the same major version at least as new, and the PSI benchmark's peer,
# openmined-psi, pins protobuf 6.30.2, so pyproject.toml requires protobuf >=6.30,<7:
#   python -m venv /tmp/gt && /tmp/gt/bin/pip install grpcio-tools==1.72.1
#   PYTHON=/tmp/gt/bin/python scripts/gen_protos.sh
# grpc_tools writes absolute imports ("import fedacq_pb2"); they are rewritten to
# package-relative ones so the generated modules work inside the fedacq package.
set -eu
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
gen() {  # proto name, output package dir
  "$python" -m grpc_tools.protoc -Iprotocols --python_out="$2" --pyi_out="$2" \
      --grpc_python_out="$2" "protocols/$1.proto"
  sed -i "s/^import $1_pb2 as /from . import $1_pb2 as /" "$2/$1_pb2_grpc.py"
  grep -q "^from . import $1_pb2 as " "$2/$1_pb2_grpc.py"
}
gen fedacq fedacq/link/_pb
gen boost fedacq/activate/_pb
