"""A seed design: which seeds an ablation runs, and the seed counts (looks) at which verdicts are taken.

A count or a list of seeds in an ablation file is a fixed design (one look, at all of them);
``{min, max[, looks]}`` is a sequential design whose boundaries live in :mod:`reflect.analysis.design`.
"""
from __future__ import annotations

from dataclasses import dataclass

SPENDING_DESCRIPTION = "Hwang–Shih–DeCani α-spending, γ = −2"


@dataclass(frozen=True)
class SeedDesign:
    """Which seeds run, and the seed counts at which verdicts are taken.

    Attributes:
        seeds: the planned seed order; look ``k`` uses the first ``looks[k]`` of them.
        looks: increasing seed counts; one entry for a fixed design.
    """

    seeds: tuple[int, ...]
    looks: tuple[int, ...]

    @property
    def sequential(self) -> bool:
        return len(self.looks) > 1

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def describe(self) -> str:
        if not self.sequential:
            return f"fixed design: {self.max_seeds} seeds"
        return (f"sequential design: looks at {', '.join(map(str, self.looks))} seeds "
                f"({SPENDING_DESCRIPTION})")


def default_looks(min_seeds: int, max_seeds: int) -> tuple[int, ...]:
    """``min``, the geometric middle and ``max`` (3, 5, 8 for min 3 and max 8), without repeats."""
    middle = int(round((min_seeds * max_seeds) ** 0.5))
    return tuple(sorted({min_seeds, middle, max_seeds}))


