"""The `lethe` command line: engine verbs (`main`), client verbs (`jobs`), service verbs (`service`,
`keys`, `compliance`). The one place where the API, the workers and the engine are wired together
(`wiring`).
"""
