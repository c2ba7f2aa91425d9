"""Storage layer (no Ray): fsspec access to local paths and s3:// (``fs``), input listing (``listing``),
batched reads (``reader``), the output Parquet schema (``schema``), deterministic shards with completion
markers (``shards``), resume/overwrite decisions (``run_state``) and the run manifest (``manifest``)."""
