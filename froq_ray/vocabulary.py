"""The named choices shared by the config, the method core, the engine and the benchmarks, each defined once.

Each vocabulary is a ``Literal`` alias (what pydantic validates a config key against, and what mypy checks a
call against) and the tuple of its values in the same order (what the core checks a plain string against and
what error messages list). Nothing here imports torch or anything else of ``froq_ray``, so ``config`` and the
CLI can use it without loading the method core.
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["fp32", "bf16", "fp16"]
"""The precision a network runs in: ``fp32`` (no autocast), ``bf16`` / ``fp16`` (autocast to that dtype)."""
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

Device = Literal["auto", "cpu", "cuda"]
"""A requested device: ``auto`` (cuda when torch sees one), ``cpu`` or ``cuda`` (an error without a GPU)."""
DEVICES: tuple[Device, ...] = get_args(Device)

IdentitySource = Literal["column", "folder"]
"""Where a row's identity comes from: ``column`` (a column of the table) or ``folder`` (the parent folder's name
of the image path)."""
IDENTITY_SOURCES: tuple[IdentitySource, ...] = get_args(IdentitySource)

SplitKeySource = Literal["column", "folder", "none"]
""":data:`IdentitySource` plus ``none``: no identity (the distill split then keys on the image path)."""
SPLIT_KEY_SOURCES: tuple[SplitKeySource, ...] = get_args(SplitKeySource)

MemoryFormat = Literal["auto", "contiguous", "channels_last"]
"""A network's memory format: ``contiguous`` (NCHW), ``channels_last`` (NHWC), ``auto`` = channels_last where a
check batch agrees with NCHW."""
MEMORY_FORMATS: tuple[MemoryFormat, ...] = get_args(MemoryFormat)

Graph = Literal["auto", "frozen", "eager"]
"""The FROQ scorer's observed forward pass (:func:`froq_ray.quality.accelerate.resolve_graph`)."""
GRAPHS: tuple[Graph, ...] = get_args(Graph)
