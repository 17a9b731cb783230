"""The client SDK of the Lethe HTTP API (`sdk`); `from lethe.client import LetheClient` is its public
face. It needs no GPU and no model: only httpx and the spec's types."""

from lethe.client.sdk import FINAL, Artifact, ClientError, Dataset, Job, LetheClient

__all__ = ["FINAL", "Artifact", "ClientError", "Dataset", "Job", "LetheClient"]
