"""`make bench-query`: query latency on a realistic 10M-event data set, against plain SQL over raw events."""
