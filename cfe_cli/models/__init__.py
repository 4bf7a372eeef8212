"""Models: classifiers (GAP + linear head), decoders/generators, safetensors weights."""
