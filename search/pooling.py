"""Pooling of the network's last feature map into one vector: generalised mean (GeM), p = 3.

Global averaging gives every position of the 7x7 map the same weight, so the textured table or wall around a
shopper's product counts as much as the product. The generalised mean (Radenović, Tolias and Chum, "Fine-tuning CNN
image retrieval with no human annotation", TPAMI 2018) raises activations to the power p before averaging: strong,
object-like responses dominate while weak background responses fade. It needs no training. docs/embeddings.md
measures it against averaging, max pooling and saliency weighting (CroW) on every benchmark domain: GeM was best or
within 0.02 of the best on each.

PyTorch is imported inside ``pooled_network``: importing this module loads nothing heavy.
"""

from __future__ import annotations

GEM_POWER = 3.0


def pooled_network(model):
    """``model`` (an EfficientNet with ``extract_features``) -> module mapping (n, 3, s, s) images to (n, c)."""
    import torch

    class GeneralisedMeanPooled(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, images):
            maps = self.network.extract_features(images).clamp(min=1e-6)  # (n, c, h, w), >= 0 after ReLU6
            return maps.pow(GEM_POWER).mean(dim=(2, 3)).pow(1.0 / GEM_POWER)

    return GeneralisedMeanPooled(model).eval()
