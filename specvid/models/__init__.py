"""Video-LLM adapters for the supported model families, and the loader that builds them."""
