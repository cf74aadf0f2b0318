"""Generated protobuf and gRPC code for the ``lossd.v1`` contract (see lossd.proto)."""
