"""What a trial does: data, the seed network, the training loop, and the Ray Tune trainable.

`model`, `data` and `train` are plain PyTorch; only `trainable` imports Ray.
"""
