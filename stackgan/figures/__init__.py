"""The StackGAN++ paper's figures regenerated for a trained experiment (`stackgan figures`):
stage.py runs them; one module per figure (tsne: Fig. 5, stages: Fig. 10, diversity: Fig. 11,
neighbours: Fig. 12, interpolation: Fig. 13, baselines: Figs. 14-15), drawn through render.py."""
