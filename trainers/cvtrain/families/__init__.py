"""Model families: torchvision (always there), ultralytics and transformers (when importable)."""
