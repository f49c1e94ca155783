import torch

# Benchmarks report per-thread-count numbers; pin it so runs are comparable.
torch.set_num_threads(2)
