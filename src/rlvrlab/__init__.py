"""rlvrlab: the optimization dynamics of RL with verifiable rewards, made runnable.

Layers (DESIGN.md): theory -> gap -> policies -> updates -> simulate -> experiments/report/cli.
"""

__version__ = "0.1.0"
