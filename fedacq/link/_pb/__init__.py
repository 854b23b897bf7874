"""Generated protobuf and gRPC modules for protocols/fedacq.proto (scripts/gen_protos.sh)."""
