"""The shared training loop and everything that plugs into it.

Nothing here knows about tabular data or about a particular model family:
a model is any ``nn.Module`` whose ``forward`` takes the tensors a batch
source yields, optionally exposing ``layer_groups()``.
"""
