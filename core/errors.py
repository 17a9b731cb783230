"""The exception types that mean "the user must fix something" (bad spec, data, model, folder).

The CLI prints them as one line and exits 1; the service turns them into 4xx responses or a
failed job with that message. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from lethe.core.data.examples import DataError
from lethe.core.data.tokens import OverlengthError
from lethe.core.models.errors import ModelError
from lethe.core.run.folder import RunFolderError
from lethe.core.spec.job import SpecError

USER_ERRORS: tuple[type[Exception], ...] = (SpecError, DataError, ModelError, OverlengthError, RunFolderError)
