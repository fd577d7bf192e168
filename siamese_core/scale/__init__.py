"""Beyond one process and one pair: Ray jobs that embed and score archives into parquet shards (:mod:`.jobs`),
embedding search over a dataset (:mod:`.search`) and over embed shards (:mod:`.shard_index`).

Imports :mod:`siamese_core.judge` and the layers below it.
"""
