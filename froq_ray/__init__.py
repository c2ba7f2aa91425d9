"""froq_ray: face-image quality (FROQ) annotation at scale on Ray."""

__version__ = "0.1.0"
