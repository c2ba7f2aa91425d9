"""The Ray engine: the only package that imports Ray.

Jobs (``froq_ray.pipeline``) plan on the driver and hand the work to the engine; the method core
(``models``, ``quality``, ``evaluation``, ``imaging``, ``curation``, ``distill``) is plain torch/numpy and never
imports this package. Modules: ``runtime`` (start or join Ray, DataContext settings), ``stages`` (read/decode
tasks and the scoring actor), ``modes`` (what each scoring mode computes and writes: schema, calibration,
per-batch runner; plain Python), ``dataset`` (the Ray Data graph), ``runner`` (the scoring run shared by
calibrate, annotate and self-training), ``progress`` (log lines), ``train`` (the distill job's Ray Train loop),
``tasks`` (plain Ray tasks over a list of work items: the export job's shards).
"""
