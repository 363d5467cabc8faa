"""The checkpoint grid viewer (workflow step 4): pick the "Goldilocks" step of a run.

Columns are the run's checkpoints (``NAME-40``), rows the seeds of the batch, optionally side by
side per base checkpoint (Z). The whole grid is one QGraphicsView, so zoom and pan are shared by
every cell by construction; the column labels, the identity plot above them and the seed labels
stay frozen at the edges (viewport margins) and follow the view. Cells arrive one by one while
the grid job runs (``add_cell``) or all at once from the catalog (``load_grid``), decoded off the
GUI thread. What the grid shows (labels, scores, the suggestion in words, the chosen step, the
grid PNG) is the Qt-free :class:`~charstudio.presenters.grid.GridPresenter`'s.

Keys: arrows move the focused cell, Shift+Left/Right select a range of columns (Refine), Enter or
E opens the focused cell (``openImage``), C chooses the focused column's step, Z toggles fit and
1:1, F fits, + and - zoom, R refines the selected range.

Modules: ``viewer`` (the widget and its actions), ``view`` (the QGraphicsView and its keys),
``cells`` (the scene items), ``headers`` (plot, labels, seeds), ``geometry``, ``looks``.
"""

from charstudio.presenters.grid import GridCellView
from charstudio.ui.grid_viewer.looks import PLOT_H
from charstudio.ui.grid_viewer.viewer import GridViewer

__all__ = ["PLOT_H", "GridCellView", "GridViewer"]
