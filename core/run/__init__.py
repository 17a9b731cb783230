"""A whole job: the pipeline of stages (`pipeline`), the unlearning stage's data, selection and probes
(`unlearn_stage`, `probes`), the self-describing run folder (`folder`), reports (`report`,
`report_html`), sweeps (`sweep`), checking a spec file offline (`validate`), evaluating saved
adapters (`evaluate`), and a job on several devices (`launch` starts the other ranks, `ranks` runs them).
"""
