"""fusionbench: compare audio-visual fusion strategies for transformers under identical conditions."""
__version__ = "0.1.0"
