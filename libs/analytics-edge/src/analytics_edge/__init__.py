"""The HTTP edge derived from the descriptor set: the Envoy configuration and the OpenAPI document."""
