"""The lessons: one module per notebook, named after it, holding that notebook's experiments and
its exercise checkers side by side.

    from normkit.lessons import l05_normalization_axes as lesson
    lesson.batch_size_sweep(...)          # an experiment of notebook 05
    lesson.check_group_norm(my_fn)        # an exercise checker of notebook 05

A lesson builds on the library (functional, layers, manual, regularize, optim, distributed) and
the course infrastructure (data, models, train, explore, check), never on another lesson
(tests/test_conventions.py checks the direction).
"""
