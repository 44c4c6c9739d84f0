"""crossdisc."""

import os
import sys

# Before anything imports pyarrow, which picks its allocator once: Arrow's jemalloc (built into
# pyarrow's Linux wheels) hands the buffers of a prepared-corpus shard that pre-training lets go
# back to the system, where its default, mimalloc, kept a share of each, so that a long run's memory
# crept up with every shard it loaded.
if sys.platform == "linux":
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
