"""The evaluate stage: accuracy of a model on held-out questions (evaluate.py), over batched
generation with transformers (generation.py) or a teachers/ backend."""
