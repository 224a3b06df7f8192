"""End-to-end and component throughput, latency and correctness benchmark (`make bench`)."""
