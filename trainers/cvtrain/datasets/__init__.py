"""Dataset readers, decoding/augmentation workers, the synthetic generator and validation."""
