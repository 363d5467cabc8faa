"""Identity scores of checkpoint-grid cells, and the suggested "Goldilocks" step.

A cell's score is the cosine similarity of its main face's embedding to the centroid of the
training images' embeddings: how much the generated face looks like the picks. Per step, the
mean and the minimum over the seeds, and the detection rate (cells where a face was found).
The suggested step is the earliest one whose *every* cell passes the identity threshold (the
workflow's rule: "the first step where all four images are recognizably the character").

Default threshold :data:`DEFAULT_IDENTITY_SIMILARITY` = 0.5: a cosine distance of 0.5 to the
picks' centroid, the strict end of the 0.5–0.6 verification range of FaceNet-style embeddings
(see :mod:`charstudio.analysis.clustering`). A centroid sits closer to each member than members
sit to each other, so this is stricter than a pairwise test. A calibrated guess to be refined
on real runs; the viewer shows the scores so the artist judges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_IDENTITY_SIMILARITY",
    "StepScore",
    "Suggestion",
    "step_scores",
    "suggest_step",
]

DEFAULT_IDENTITY_SIMILARITY = 0.5


@dataclass(frozen=True)
class StepScore:
    step: int
    mean: float | None  # over the cells with a face; None when no cell has one
    minimum: float | None  # a cell without a face counts as failing, not as a low score
    detection_rate: float  # cells with a face / cells
    cells: int

    def passes(self, threshold: float) -> bool:
        """Every cell has a face scoring at least ``threshold``."""
        return (
            self.cells > 0
            and self.detection_rate == 1.0
            and self.minimum is not None
            and self.minimum >= threshold
        )


@dataclass(frozen=True)
class Suggestion:
    step: int | None
    reason: str


def step_scores(cells: Mapping[int, Sequence[float | None]]) -> list[StepScore]:
    """Per step (ascending): ``cells[step]`` are the cell scores, None where no face was found."""
    out = []
    for step in sorted(cells):
        scores = list(cells[step])
        found = [s for s in scores if s is not None]
        out.append(
            StepScore(
                step=step,
                mean=sum(found) / len(found) if found else None,
                minimum=min(found) if found else None,
                detection_rate=len(found) / len(scores) if scores else 0.0,
                cells=len(scores),
            )
        )
    return out


def suggest_step(
    scores: Sequence[StepScore], threshold: float = DEFAULT_IDENTITY_SIMILARITY
) -> Suggestion:
    """The earliest step whose every cell passes, with the reason in words (also when none
    does, or when identity collapses again at later steps: a sign of over-baking)."""
    ordered = sorted(scores, key=lambda s: s.step)
    if not ordered:
        return Suggestion(None, "no scored cells: the face recognizer is needed for scores")
    for index, score in enumerate(ordered):
        if not score.passes(threshold):
            continue
        later_failures = [s.step for s in ordered[index + 1 :] if not s.passes(threshold)]
        reason = (
            f"step {score.step} is the first where every image ({score.cells}) shows a face "
            f"scoring at least {threshold:.2f} (lowest {score.minimum:.2f}, mean "
            f"{score.mean:.2f})"
        )
        if later_failures:
            steps = ", ".join(str(s) for s in later_failures[:5])
            reason += f"; identity drops again at step {steps}: later steps may be over-baked"
        return Suggestion(score.step, reason)
    best = max(ordered, key=lambda s: s.minimum if s.minimum is not None else -2.0)
    if best.minimum is None:
        return Suggestion(None, "no step passes: no face was found in any cell")
    return Suggestion(
        None,
        f"no step passes the identity threshold {threshold:.2f}; the closest is step "
        f"{best.step} (lowest {best.minimum:.2f}, faces in {best.detection_rate:.0%} of "
        "the cells): train longer, or check the picks",
    )
