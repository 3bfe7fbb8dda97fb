"""Stage 0: a tiny base model from scratch. train.py is `r1lab pretrain` (PretrainConfig, main); corpus.py writes the
synthetic search traces it learns from."""
