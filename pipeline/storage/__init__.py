"""ptg.pipeline.storage: the storage engine and the stores built on it.

`shardstore` is the engine (whole shards, commit records, verified reads, one writer); `store`
(priors), `imagestore` (decoded images and F's outputs) and `priorcache` (a memory-mapped training
copy) are the stores; `location`, `remote`, `lease`, `storecopy` and `bucketwriter` put them in
buckets; `store_checks` and `store_integrity` check what a teammate shared. Imports only
`ptg.pipeline.core`: storage never knows about models, encoders or datasets.
"""
