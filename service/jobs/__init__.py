"""Jobs: submission and queries (`records`), running one on a worker with a fenced claim
(`execution`, `progress`), reconciling lost ones (`reconcile`), state changes (`transitions`)
and what a spec may name on this deployment (`policy`).
"""
