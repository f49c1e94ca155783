"""The registry of model families (the protocol they follow: stackgan/methods/base.py)."""

from stackgan.methods.base import Method


def _registry():
    from stackgan.methods.sgan import SGANMethod
    from stackgan.methods.v1 import V1Method
    from stackgan.methods.v2 import V2Method

    return {"v1": V1Method, "v2": V2Method, "sgan": SGANMethod}


def family(name) -> type[Method]:
    """The Method class of a family name (cfg["family"] or a model.pt's "family")."""
    return _registry()[name]


def build_method(cfg, device, grad_sync=None) -> Method:
    return family(cfg["family"])(cfg, device, grad_sync)


def load_generator(payload, device):
    """The eval-mode generator saved in a model.pt by `stackgan train`."""
    return family(payload["family"]).load_generator(payload, device)


def output_resolution(cfg) -> int:
    """Side of the images an experiment's samples are scored at."""
    return family(cfg["family"]).output_resolution(cfg)


def parameter_counts(cfg):
    """{network name: parameter count} built on the meta device (no memory, no init cost)."""
    import torch

    with torch.device("meta"):
        nets = family(cfg["family"]).build_networks(cfg)
    return {k: sum(p.numel() for p in v.parameters() if p.requires_grad) for k, v in nets.items()}
