"""Lighting: DPR's spherical-harmonics convention, SH shading and the analytic (mesh-normal) relighting."""
