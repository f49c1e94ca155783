"""Registry of model families. A method owns its networks, optimisers and one training iteration.

Protocol (see stackgan/methods/v2.py for the reference implementation):
  nets: dict of modules (all checkpointed); optims: dict of optimisers
  make_dataset(prepared_split) -> the training Dataset (items are pure functions of seed, epoch, index)
  draw_noise(torch.Generator, global_batch) -> {name: tensor} for the whole global batch
  train_step(batch, noise, step) -> dict of floats; on_epoch(epoch) for schedules
  eval_generator() -> generator for sampling; export_extra() -> extra entries for model.pt
  state_dict() / load_state_dict(state)
"""


def training_state(method) -> dict:
    """Every network's and optimiser's state: the part of state_dict() all families share."""
    return {"nets": {k: v.state_dict() for k, v in method.nets.items()},
            "optims": {k: v.state_dict() for k, v in method.optims.items()}}


def load_training_state(method, state: dict):
    for k, v in state["nets"].items():
        method.nets[k].load_state_dict(v)
    for k, v in state["optims"].items():
        method.optims[k].load_state_dict(v)


def _registry():
    from stackgan.methods.v1 import V1Method
    from stackgan.methods.sgan import SGANMethod
    from stackgan.methods.v2 import V2Method

    return {"v1": V1Method, "v2": V2Method, "sgan": SGANMethod}


def build_method(cfg, device, grad_sync=None):
    return _registry()[cfg["family"]](cfg, device, grad_sync)


def load_generator(payload, device):
    """The eval-mode generator saved in a model.pt by `stackgan train`."""
    return _registry()[payload["family"]].load_generator(payload, device)


def parameter_counts(cfg):
    """{network name: parameter count} built on the meta device (no memory, no init cost)."""
    import torch

    with torch.device("meta"):
        nets = _registry()[cfg["family"]].build_networks(cfg)
    return {k: sum(p.numel() for p in v.parameters() if p.requires_grad) for k, v in nets.items()}
