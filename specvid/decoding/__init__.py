"""Speculative decoding: pure acceptance rules, the two workers, and the one decode loop."""
