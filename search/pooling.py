"""Pooling of the network's last feature map into one vector: generalised mean (GeM), p = 3; and the stride-16 map
beside it, for matching details (search/details.py).

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


def detail_block(model) -> int:
    """Index of the block whose output is the network's stride-16 map (14 x 14 at 224 px): the last block before
    the last stride-2 block. Its descriptors are local (a 16 px cell's neighbourhood) yet already abstract."""
    strides = [block._block_args.stride for block in model._blocks]
    stride_2 = [index for index, stride in enumerate(strides) if (stride[0] if isinstance(stride, list) else stride) == 2]
    return stride_2[-1] - 1


def pooled_network(model):
    """``model`` (an EfficientNet-Lite) -> module mapping (n, 3, s, s) images to ((n, c) pooled features,
    (n, c16, s/16, s/16) stride-16 map)."""
    import torch

    class GeneralisedMeanPooled(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network
            self.detail_block = detail_block(network)

        def forward(self, images):
            # EfficientNet's extract_features, keeping the stride-16 map on the way (no drop-connect: inference).
            network = self.network
            x = network._swish(network._bn0(network._conv_stem(images)))
            details = x
            for index, block in enumerate(network._blocks):
                x = block(x)
                if index == self.detail_block:
                    details = x
            maps = network._swish(network._bn1(network._conv_head(x))).clamp(min=1e-6)  # (n, c, h, w), >= 0
            return maps.pow(GEM_POWER).mean(dim=(2, 3)).pow(1.0 / GEM_POWER), details

    return GeneralisedMeanPooled(model).eval()
