"""Datasets: reading files and the shipped `builtin:` data (`files`, folder `builtin/`), examples by
schema (`examples`) and tokenisation into training rows (`tokens`).
"""
