"""Qt-free presenters: each screen's state and rules, driven by the GUI and by tests.

Widgets in ``charstudio.ui`` show what a presenter says and pass the artist's choices back;
the presenter turns them into the core's request objects, checks and wording.
"""
