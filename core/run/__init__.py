"""A whole job: the pipeline of stages (`pipeline`), the unlearning stage's data, selection and probes
(`unlearn_stage`, `probes`), the self-describing run folder (`folder`), reports (`report`,
`report_html`), sweeps (`sweep`), checking a spec file offline (`validate`) and evaluating saved
adapters (`evaluate`).
"""
