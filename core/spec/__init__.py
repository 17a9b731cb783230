"""The job spec: typed building blocks (`fields`), selection/probe/sweep options (`options`), the
whole spec with its method's configuration (`job`) and the one walker over its dataset references
(`refs`).
"""
