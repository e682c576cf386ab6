"""Generated protobuf/gRPC code of proto/rtindex/v1 (scripts/gen_proto.sh; do not edit)."""
