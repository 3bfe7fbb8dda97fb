"""Evaluation as the papers do it (evaluate.py: pass@k, cons@k, greedy, lengths, by difficulty) and the reasoning
behaviour read from completions (behaviour.py: arithmetic steps, attempts, self-checking markers)."""
