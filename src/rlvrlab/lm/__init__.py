"""RLVR on real language models: verifiable tasks, tiny base models, and a GRPO trainer with live
Gradient-Gap diagnostics (the paper's §6.2 and Figure 2)."""

from rlvrlab.lm.monitor import GapMonitor, GapWarning, gap_warnings

__all__ = ["GapMonitor", "GapWarning", "gap_warnings"]
