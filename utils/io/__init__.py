"""Files in and out: shard listing, vector and text readers, atomic writes, run records, plots."""
