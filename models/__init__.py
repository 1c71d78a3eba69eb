"""PyTorch models and everything they need: features, labels, training, checkpoints.

Pure PyTorch + NumPy: nothing here knows about brokers, the journal or the engine.
"""
