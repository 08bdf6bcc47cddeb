"""The analysis layer: pure functions from (ablation, trial records) to typed verdicts.

Reports, gates and the CLIs share it; it imports neither Optuna nor Lightning.

- :mod:`design`: fixed and sequential seed designs, group-sequential boundaries
- :mod:`hypothesis`: one-sided paired t-tests against the margin, TOST, matching intervals
- :mod:`power`: minimum detectable effects
- :mod:`inputs`: which records count, protocol checks, paired gains, spreads
- :mod:`verdicts`: ``analyze`` — the replay of the design: looks, Holm, verdicts, failures, literature
- :mod:`convergence`, :mod:`frames`: description beside the verdict (trend over the window, per-frame)
"""
