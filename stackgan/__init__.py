"""stackgan-repro: a reproduction harness for StackGAN-v1, StackGAN-v2 and SGAN."""

__version__ = "0.1.0"
