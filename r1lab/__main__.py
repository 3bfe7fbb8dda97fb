"""`python -m r1lab COMMAND ...`: the `r1lab` command, for launchers that start a module in every process.

    torchrun --nproc-per-node 8 -m r1lab rl --recipe tinyzero_countdown_qwen3b
    accelerate launch --num-processes 8 -m r1lab rl --recipe tinyzero_countdown_qwen3b
"""
import sys

from r1lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
