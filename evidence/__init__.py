"""Evidence a third party checks without Lethe's service: the signed unlearning certificate's
canonical form, signing and verification (`certificate`).
"""
