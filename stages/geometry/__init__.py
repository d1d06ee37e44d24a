"""Mesh geometry: OBJ input/output, rasterising and rendering of textured meshes."""
