"""`specvid bench`: decoding methods compared on the same videos, in one run (docs/bench.md)."""
