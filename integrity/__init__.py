"""Integrity: hashing, the RFC 9162 Merkle log, C2SP signed notes, receipts, verification.

Standard library and ``cryptography`` (and ``rfc3161-client``) only, so the offline verifier
stays small and auditable.
"""
