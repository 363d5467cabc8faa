"""Seeded weights for test models, so no fixture depends on a library's initialisation.

Libraries change how they initialise layers between releases (transformers 5 started CLIP's
final LayerNorm at exactly weight 1 / bias 0, which made a chunk's mean exactly 0). Fixtures
build a model, then overwrite every parameter here with values of a plausible scale.
"""

from __future__ import annotations

import math

import torch

_NORMS = (torch.nn.LayerNorm, torch.nn.GroupNorm)


def set_random_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter of ``model`` seeded random values; returns the model.

    Linear and conv weights get PyTorch's default scale (std 1/sqrt(3 * fan-in)), embeddings
    CLIP's (0.02), biases small noise, and norm layers weight 1 and bias 0 plus noise, so no
    two tensors are equal and no mean is exactly zero.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=generator)
                if isinstance(module, _NORMS):
                    value = (1.0 if name == "weight" else 0.0) + 0.1 * noise
                elif isinstance(module, torch.nn.Embedding) or param.ndim == 1:
                    value = 0.02 * noise  # CLIP's embedding scale; small biases
                else:
                    value = noise / math.sqrt(3 * param[0].numel())
                param.copy_(value.to(param.dtype))
    return model
