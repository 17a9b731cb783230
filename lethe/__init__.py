"""Lethe: an unlearning service that makes a language model forget.

The engine lives in `lethe.core`; the HTTP API in `lethe.api`; Celery workers in `lethe.worker`;
persistence, storage and settings shared by both shells in `lethe.service`.
"""

__version__ = "0.1.0"
