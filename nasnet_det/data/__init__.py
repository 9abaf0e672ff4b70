"""Data helpers that need neither torch nor detectron2.

``image_folder``: the one set of image file extensions and the one ``root/<class>/*`` scanner
that pretraining, the search's proxy data and the demo's folder inputs share.
``synthetic``: the procedural shapes detection dataset of ``make demo`` (numpy and OpenCV only).
Import the submodule you need; this package imports nothing at load.
"""
