"""The training engine: the stage loop with checkpoints (`engine`), one micro-batch's loss (`step`),
rows by kind (`rows`), the cached reference outputs (`refcache`) and checkpoint files (`checkpoint`).
"""
