"""Hydra configs shipped with the package (found as a file path or as ``pkg://diffedit_lab.conf``)."""
