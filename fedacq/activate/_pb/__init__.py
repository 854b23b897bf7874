"""Generated protobuf/gRPC code for protocols/boost.proto (regenerate with scripts/gen_protos.sh); do not edit."""
