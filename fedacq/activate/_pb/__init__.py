"""Generated protobuf/gRPC code for protocols/boost.proto (see regenerate.py); do not edit."""
