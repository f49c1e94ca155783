"""Which torch device a command runs on: one rule for every `--device` flag."""

from stackgan.errors import UserError

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(pref="auto"):
    """The torch.device for a --device value. `auto` (or None): CUDA when this machine has it,
    else CPU; `cuda` without CUDA is a user error."""
    import torch  # here, not at the top: cli.py reads CHOICES before the CPU pins let torch load

    pref = "auto" if pref is None else str(pref)
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {pref} asked for, but this machine has no CUDA device; use --device cpu or auto")
    try:
        return torch.device(pref)
    except RuntimeError:
        raise UserError(f"unknown device '{pref}'; use one of {', '.join(CHOICES)}") from None
