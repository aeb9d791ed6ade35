"""Relational models over the master tensor (R-GCN). torch and PyTorch Geometric load only here, and only when
a model is built or trained: ``pip install -e '.[models]'``."""
