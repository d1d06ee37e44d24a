"""Mesh tools shipped with the dataset: eyeballs for HiFi3D++ heads, HiFi3D++ UVs on FLAME meshes."""
