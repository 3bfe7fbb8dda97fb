"""Reinforcement learning: the pure math lives in r1lab.rl.algos; training loops import it by name."""
