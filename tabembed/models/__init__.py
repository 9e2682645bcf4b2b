"""Plain ``torch.nn.Module`` models. They know nothing about training.

Every model's ``forward(codes, continuous)`` takes an int64 tensor of category
codes ``[n, n_cat]`` and a float tensor ``[n, n_cont]``, which is exactly what
:meth:`tabembed.preprocessing.TabularPreprocessor.to_tensors` produces.
"""

from tabembed.models.augmentation import EmbeddingMixup, MixupLoss, SwapNoise
from tabembed.models.collab import DotBias, NeuralCF
from tabembed.models.denoising import DenoisingAutoencoder, ReconstructionLoss
from tabembed.models.heads import TASKS, loss_for_task, predictions_from_output
from tabembed.models.numeric_embeddings import PeriodicEmbeddings
from tabembed.models.tabular import EntityEmbeddingMLP

__all__ = [
    "TASKS",
    "DenoisingAutoencoder",
    "DotBias",
    "EmbeddingMixup",
    "EntityEmbeddingMLP",
    "MixupLoss",
    "NeuralCF",
    "PeriodicEmbeddings",
    "ReconstructionLoss",
    "SwapNoise",
    "loss_for_task",
    "predictions_from_output",
]
