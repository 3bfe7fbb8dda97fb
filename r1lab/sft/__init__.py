"""Supervised fine-tuning: the R1 pipeline's cold start and distillation stage (`r1lab sft`)."""
