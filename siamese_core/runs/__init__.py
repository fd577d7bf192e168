"""Runs: a run directory and every file in it (:mod:`.run`, its score files in :mod:`.scores`, its verdict — fusion and
threshold, one file — in :mod:`.verdict`), runs by id (:mod:`.registry`), whether a job's process lives and is ours
(:mod:`.liveness`), the one-job lock (:mod:`.lock`), background jobs (:mod:`.jobs`) and deleting runs and datasets, or
replacing a dataset, refused while a job uses it (:mod:`.delete`).

Above the data layer (a run records the dataset it trained on) and below learning and judging, which read and
write runs through :class:`~siamese_core.runs.run.Run`.
"""
