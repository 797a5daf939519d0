"""Trusted time: RFC 3161 time-stamp tokens over our checkpoints, via ``rfc3161-client``.

We keep the whole TimeStampResp (the ``.tsr``) so a reviewer can check it with
``openssl ts -verify`` as well as with :func:`verify_timestamp`. Every third-party error is
turned into TimestampError here, at the boundary. No HTTP here: ``ingest.tsa_client`` sends the
request this module builds and hands the reply back to be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimeStampRequest,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from integrity.errors import TimestampError

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
"""RFC 3161 §3.4: the media types of a request and a response over HTTP."""
SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
MAX_RESPONSE_BYTES = 1024 * 1024


def _request(data: bytes) -> TimeStampRequest:
    """RFC 3161 §2.4.1 TimeStampReq: SHA-256 imprint, a random nonce, and certReq so the token
    carries the TSA certificate a verifier needs."""
    if not data:
        raise TimestampError("cannot time-stamp empty data")
    builder = TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256)
    return builder.nonce(nonce=True).cert_request(cert_request=True).build()


def build_request(data: bytes) -> bytes:
    """The DER TimeStampReq for ``data``."""
    return _request(data).as_bytes()


def _decode(tsr: bytes) -> TimeStampResponse:
    try:
        response = decode_timestamp_response(tsr)
    except ValueError as e:
        raise TimestampError(f"malformed time-stamp response: {e}") from None
    if response.status != PKIStatus.GRANTED:
        detail = "; ".join(response.status_string)
        raise TimestampError(
            f"TSA did not grant the time-stamp (status {response.status}) {detail}"
        )
    return response


def _check_imprint(response: TimeStampResponse, data: bytes) -> None:
    imprint = response.tst_info.message_imprint
    if imprint.hash_algorithm != SHA256_OID:
        raise TimestampError(f"time-stamp imprint uses {imprint.hash_algorithm}, expected SHA-256")
    computed = hashlib.sha256(data).digest()
    if imprint.message != computed:
        raise TimestampError(
            f"time-stamp is over SHA-256 {imprint.message.hex()}, "
            f"but the data hashes to {computed.hex()}"
        )


@dataclass(frozen=True)
class TimestampQuery:
    """A TimeStampReq ready to send, and the nonce its reply must echo."""

    der: bytes
    nonce: int


def prepare_request(data: bytes) -> TimestampQuery:
    """The request to send for ``data`` (the HTTP exchange is the caller's:
    ``ingest.tsa_client``)."""
    request = _request(data)
    if request.nonce is None:  # pragma: no cover - _request always asks for one
        raise TimestampError("the request has no nonce")
    return TimestampQuery(der=request.as_bytes(), nonce=request.nonce)


def check_reply(tsr: bytes, *, data: bytes, query: TimestampQuery) -> None:
    """Check a TSA's reply to ``query``: granted, answering our nonce, over our data, and not
    larger than MAX_RESPONSE_BYTES. Who signed it is :func:`verify_timestamp`'s job."""
    if len(tsr) > MAX_RESPONSE_BYTES:
        raise TimestampError(f"the TSA answered more than {MAX_RESPONSE_BYTES} bytes")
    response = _decode(tsr)
    if response.tst_info.nonce != query.nonce:
        raise TimestampError(
            f"TSA answered nonce {response.tst_info.nonce}, expected {query.nonce}"
        )
    _check_imprint(response, data)


def _load_certificates(blobs: Sequence[bytes]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for blob in blobs:
        try:
            if b"-----BEGIN" in blob:
                certs.extend(x509.load_pem_x509_certificates(blob))
            else:
                certs.append(x509.load_der_x509_certificate(blob))
        except ValueError as e:
            raise TimestampError(f"cannot load certificate: {e}") from None
    return list(dict.fromkeys(certs))  # the builder refuses duplicates


def verify_timestamp(
    tsr: bytes,
    data: bytes,
    *,
    roots: Sequence[bytes],
    intermediates: Sequence[bytes] = (),
) -> datetime:
    """Check an RFC 3161 TimeStampResp over ``data``; return its genTime (UTC).

    Verifies that the imprint is SHA-256 of ``data``, that the token's signature chains to one
    of ``roots`` (PEM or DER) through ``intermediates`` and that the signing certificate is a
    critical-EKU timeStamping certificate (RFC 3161 §2.3). Raises TimestampError otherwise.
    """
    response = _decode(tsr)
    _check_imprint(response, data)
    root_certs = _load_certificates(roots)
    if not root_certs:
        raise TimestampError("no trusted root certificates given")
    builder = VerifierBuilder()
    for cert in root_certs:
        builder = builder.add_root_certificate(cert)
    for cert in _load_certificates(intermediates):
        builder = builder.add_intermediate_certificate(cert)
    try:
        builder.build().verify(response, hashlib.sha256(data).digest())
    except (VerificationError, ValueError) as e:
        raise TimestampError(f"time-stamp does not verify: {e}") from None
    gen_time = response.tst_info.gen_time
    if gen_time.tzinfo is None:
        gen_time = gen_time.replace(tzinfo=UTC)  # GeneralizedTime in a token is UTC (§2.4.2)
    return gen_time.astimezone(UTC)


def token_time(tsr: bytes, data: bytes) -> datetime:
    """The time an RFC 3161 response states for ``data``, checking only that it was granted
    and that its imprint is SHA-256 of ``data``; who signed it is :func:`verify_timestamp`'s
    to check (it needs the TSA's roots)."""
    response = _decode(tsr)
    _check_imprint(response, data)
    return response.tst_info.gen_time
