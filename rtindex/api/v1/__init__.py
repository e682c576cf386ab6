"""Generated protobuf/gRPC code of proto/rtindex/api/v1 (scripts/gen_proto.sh; do not edit)."""
