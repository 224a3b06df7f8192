"""Local HTTP edge reproducing Envoy's gRPC-JSON transcoder."""
