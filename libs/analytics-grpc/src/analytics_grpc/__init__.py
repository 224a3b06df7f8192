"""gRPC server bootstrap, interceptors, errors and the cached auth client."""
