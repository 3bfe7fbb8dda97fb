"""The compute and cost account.

    flops.py      FLOPs of a decoder-only transformer from its shape and the tokens it processed
    published.py  GPU peaks and prices, GPU-hours and dollars, DeepSeek-V3/R1's published tables rebuilt
    account.py    every r1lab run's own account: FLOPs, wall time, MFU against this machine's peak, rented cost
    recipes.py    what an RL recipe's run will cost before it runs, beside what its source published
"""
