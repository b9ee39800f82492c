"""Encryption at rest: a Temporal payload codec that seals every payload with AES-256-GCM.

Keys come from `THREADCHAT_ENCRYPTION_KEY` (see threadchat.config): the first key encrypts,
every key decrypts, so a key is rotated by putting the new one first and keeping the old ones
until no history needs them. Each encrypted payload names its key by id (the first 8 hex
digits of the key's SHA-256), never by the key itself. Payloads written before encryption was
turned on pass through unchanged on decode.

`codec_routes` serves the same codec over HTTP in Temporal's remote codec protocol, so the
Temporal Web UI and CLI can show decrypted history to operators. The bot serves them on a
listener of their own (THREADCHAT_CODEC_HOST:THREADCHAT_CODEC_PORT), never beside
/slack/events. Encoding needs the bearer token always: it makes payloads the worker trusts.
"""

import dataclasses
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Sequence

from aiohttp import hdrs, web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.converter import default as default_converter

log = logging.getLogger(__name__)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
CODEC_PATH = "/codec"


class DecryptionError(ValueError):
    """An encrypted payload that none of the configured keys can open."""


def key_id(key: bytes) -> str:
    """A key's public name: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (metadata and data), with a random
    12-byte nonce per payload. Stored data is nonce + ciphertext + tag."""

    def __init__(self, keys: Sequence[bytes]):
        if not keys:
            raise ValueError("at least one key is required")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"keys must be {KEY_BYTES} bytes")
        self._encrypt_id = key_id(keys[0])
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}

    @property
    def encrypt_key_id(self) -> str:
        return self._encrypt_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._encrypt_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self._encrypt_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was turned on
        kid = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(
                f"payload was encrypted with key id {kid or '(none)'}, which is not among "
                f"THREADCHAT_ENCRYPTION_KEY's keys ({', '.join(self._ciphers)})"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            raise DecryptionError(
                f"payload with key id {kid} failed authentication: a different key with the "
                f"same id, or corrupted data"
            ) from None
        return Payload.FromString(plain)


class EncryptedPayloadError(ValueError):
    """An encrypted payload met where no key is configured at all."""

    def __init__(self, kid: str):
        super().__init__(f"payload encrypted with key id {kid}")
        self.key_id = kid


class SealedPayloadCheck(PayloadCodec):
    """For readers without keys (the operator views): plain payloads pass, and an encrypted
    one raises EncryptedPayloadError at once, instead of decoding to nonsense or nothing."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                raise EncryptedPayloadError(payload.metadata.get(KEY_ID, b"?").decode())
        return list(payloads)


def reader_data_converter(keys: Sequence[bytes]) -> DataConverter:
    """The converter of tools that only read history: `data_converter(keys)`, or without keys
    one that says so when it meets an encrypted payload."""
    if keys:
        return data_converter(keys)
    return dataclasses.replace(default_converter(), payload_codec=SealedPayloadCheck())


def data_converter(keys: Sequence[bytes]) -> DataConverter:
    """Temporal's default converter, encrypting with `keys`; without keys, the default.

    Failure messages and stack traces are encoded too (they can quote what users wrote)."""
    base = default_converter()
    if not keys:
        return base
    return dataclasses.replace(
        base,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


# The remote codec protocol (as Temporal's samples and the Web UI speak it): POST
# {CODEC_PATH}/decode and /encode with `{"payloads": [...]}`, Payloads protobuf as JSON.

ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"


def codec_routes(
    codec: PayloadCodec, token: str | None, origins: Iterable[str]
) -> list[web.RouteDef]:
    """Routes for `{CODEC_PATH}/decode` and `/encode` (POST, and the browser's OPTIONS
    preflight). With `token`, every POST needs `Authorization: Bearer <token>`; without one,
    decode is open (to whoever reaches the listener: loopback, by config) and encode is
    refused. CORS headers are only given to `origins`, so other web pages cannot read
    decrypted payloads through an operator's browser."""
    allowed = frozenset(origins)
    expected = f"Bearer {token}".encode() if token else None

    def cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        response.headers[hdrs.VARY] = "Origin"
        if origin and origin in allowed:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            # The UI's "Include cross-origin credentials" option sends cookies.
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        return response

    async def preflight(request: web.Request) -> web.Response:
        return cors(request, web.Response(status=204))

    def refuse(request: web.Request, status: int, error: str) -> web.Response:
        return cors(request, web.json_response({"error": error}, status=status))

    def handler(decode: bool):
        async def handle(request: web.Request) -> web.Response:
            if expected is None and not decode:
                return refuse(request, 403, "encoding needs THREADCHAT_CODEC_TOKEN set on the bot")
            if expected is not None:
                given = request.headers.get(hdrs.AUTHORIZATION, "").encode()
                if not hmac.compare_digest(given, expected):
                    return refuse(request, 401, "a valid bearer token is required")
            try:
                payloads = json_format.Parse(await request.read(), Payloads())
            except (json_format.ParseError, UnicodeDecodeError):
                return refuse(request, 400, "the body must be Payloads as protobuf JSON")
            try:
                if decode:
                    result = await codec.decode(payloads.payloads)
                else:
                    result = await codec.encode(payloads.payloads)
            except (ValueError, TypeError) as err:
                log.warning("codec endpoint: %s", err)
                return refuse(request, 400, str(err))
            body = json_format.MessageToJson(Payloads(payloads=result))
            return cors(request, web.Response(text=body, content_type="application/json"))

        return handle

    routes = []
    for name, decode in (("decode", True), ("encode", False)):
        path = f"{CODEC_PATH}/{name}"
        routes += [web.post(path, handler(decode)), web.options(path, preflight)]
    return routes
