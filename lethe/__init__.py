"""Lethe: an unlearning service that makes a language model forget.

Module `lethe.X.Y` lives at `X/Y.py` in the repository: the engine in `lethe.core` (core/), the HTTP
API in `lethe.api` (api/), Celery workers in `lethe.worker` (worker/), what both shells share in
`lethe.service` (service/), the command line in `lethe.cli` (cli/), the client SDK in
`lethe.client` (client/) and the offline evidence checks in `lethe.evidence` (evidence/). This
folder holds only the package root.
"""

__version__ = "0.1.0"
