"""Trust: API keys (`auth`), the hash-chained audit log (`audit`), signed certificates
(`certificates`) and signed webhooks (`webhooks`).
"""
