"""SpecVid: training-free speculative decoding for Video-LLMs."""
__version__ = "0.1.0"
