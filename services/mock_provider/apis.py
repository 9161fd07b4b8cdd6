"""The provider APIs the mock emulates over HTTP, each with its own request and error format:

- ``POST /{provider}/2010-04-01/Accounts/{account}/Messages.json``: an SMS/MMS gateway (form-encoded,
  basic auth, numeric error codes, ``StatusCallback``);
- ``POST /{provider}/{version}/{phone_number_id}/messages``: the WhatsApp Business Cloud API (JSON,
  bearer token, Graph API errors);
- ``POST /{provider}/v2/send``: a self-hosted signal-cli REST API (JSON, ``{"error": "<text>"}``,
  optional basic auth in front);
- ``POST /hooks/{provider}/{anything}``: a webhook receiver that checks the HMAC-SHA256 signature.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from services.mock_provider.behaviour import Answer, Verdict
from services.mock_provider.reports import Delivery, public_ref
from services.mock_provider.results import Refused, json_response
from shared.core.signatures import SWITCHBOARD_HEADER, verify_timestamped

if TYPE_CHECKING:
    from services.mock_provider.app import MockProvider

# Our words -> the gateway's numeric codes, and the WhatsApp Cloud API's.
SMS_CODES = {
    "INVALID_NUMBER": 21211,
    "BLOCKED": 30004,
    "SPAM_REJECTED": 30007,
    "HARD_BOUNCE": 21211,
    "RATE_LIMITED": 20429,
    "SERVER_ERROR": 20500,
    "PROVIDER_UNAVAILABLE": 20503,
}
WHATSAPP_CODES = {
    "INVALID_NUMBER": 100,
    "BLOCKED": 131026,
    "SPAM_REJECTED": 131026,
    "HARD_BOUNCE": 131026,
    "UNDELIVERABLE": 131026,
    "RATE_LIMITED": 130429,
    "SERVER_ERROR": 131000,
    "PROVIDER_UNAVAILABLE": 131016,
}

# Our words -> the texts signal-cli's REST API answers with (its exceptions, as it reports them).
SIGNAL_TEXTS = {
    "INVALID_NUMBER": (400, "Invalid phone number: {to}"),
    "BLOCKED": (400, 'Failed to send message: Unregistered user "{to}"'),
    "SPAM_REJECTED": (400, "Failed to send message: ProofRequiredException: captcha required"),
    "HARD_BOUNCE": (400, 'Failed to send message: Unregistered user "{to}"'),
    "RATE_LIMITED": (429, "Failed to send message: RateLimitException: Rate limit exceeded"),
    "SERVER_ERROR": (500, "Failed to send message: IOException: Connection reset"),
    "PROVIDER_UNAVAILABLE": (503, "Failed to send message: Signal service unavailable"),
}


def segments(body: str) -> int:
    """SMS segments of a body, as gateways count them: 160 characters alone, 153 per part when split
    (GSM-7; 70 and 67 for a body outside it)."""
    gsm = all(ord(c) < 128 for c in body)
    single, part = (160, 153) if gsm else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // part)


def _retry_after(answer: Answer) -> dict[str, str] | None:
    return {"Retry-After": f"{answer.retry_after_s:g}"} if answer.retry_after_s is not None else None


def _basic_auth(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class Apis:
    def __init__(self, provider: MockProvider) -> None:
        self.mock = provider

    def _token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token, self.mock.token)

    # ---- SMS / MMS gateway ---------------------------------------------------------------------------

    async def sms(self, request: web.Request) -> web.Response:
        provider, account = request.match_info["provider"], request.match_info["account"]
        credentials = _basic_auth(request.headers.get("Authorization", ""))
        if credentials is None or credentials[0] != account or not self._token_ok(credentials[1]):
            return self._sms_error(401, 20003, "Authenticate")
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        media = [str(m) for m in form.getall("MediaUrl", [])]
        if not to:
            return self._sms_error(400, 21604, "A 'To' phone number is required")
        if not body and not media:
            return self._sms_error(400, 21602, "Message body is required")
        if len(body) > 1600:
            return self._sms_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit"
            )
        key = request.headers.get("Idempotency-Key") or str(form.get("Reference", ""))
        if not key:
            return self._sms_error(400, 21602, "an Idempotency-Key header or a Reference is required")
        channel = "mms" if media else "sms"
        sender = str(form.get("From", ""))
        callback = str(form.get("StatusCallback", "")) or None
        result = await self.mock.submit(
            provider,
            channel,
            to,
            key,
            Delivery("sms_gateway", provider, channel, to, key, url=callback, sender=sender),
        )
        if isinstance(result, Refused):
            code = SMS_CODES.get(result.answer.code or "", 20500)
            return self._sms_error(
                result.answer.status, code, result.answer.message or "", _retry_after(result.answer)
            )
        response = result.response
        sid = public_ref("sms_gateway", response["id"])
        return json_response(
            {
                "sid": sid,
                "status": "queued",
                "to": to,
                "from": sender,
                "body": body,
                "num_media": str(len(media)),
                "num_segments": str(segments(body)),
                "price": f"-{response['cost']:.5f}",
                "price_unit": "USD",
                "reference": key,
                "replay": response["replay"],
            },
            201,
        )

    @staticmethod
    def _sms_error(
        status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response(
            {
                "code": code,
                "message": message,
                "status": status,
                "more_info": f"https://gateway.example/docs/errors/{code}",
            },
            status,
            headers,
        )

    # ---- WhatsApp Business Cloud API -------------------------------------------------------------------

    async def whatsapp(self, request: web.Request) -> web.Response:
        provider, phone_number_id = request.match_info["provider"], request.match_info["phone_number_id"]
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not self._token_ok(token):
            return self._graph_error(401, 190, "Error validating access token", "OAuthException")
        try:
            body: Any = orjson.loads(await request.read())
            if body.get("messaging_product") != "whatsapp":
                raise ValueError("messaging_product must be whatsapp")
            to = str(body["to"])
            kind = body.get("type", "text")
            if kind == "text" and not str(body.get("text", {}).get("body", "")):
                raise ValueError("text.body is required")
            if kind == "template" and not body.get("template", {}).get("name"):
                raise ValueError("template.name is required")
            if kind not in ("text", "template"):
                return self._graph_error(400, 131051, f"Unsupported message type: {kind}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._graph_error(400, 100, f"Invalid parameter: {exc}")
        key = request.headers.get("Idempotency-Key") or str(body.get("biz_opaque_callback_data") or "")
        recipient = "+" + to.lstrip("+")
        result = await self.mock.submit(
            provider,
            "whatsapp",
            recipient,
            key,
            Delivery("whatsapp_cloud", provider, "whatsapp", recipient, key, sender=phone_number_id),
        )
        if isinstance(result, Refused):
            code = WHATSAPP_CODES.get(result.answer.code or "", 131000)
            status = 429 if result.answer.verdict == Verdict.RATE_LIMIT else result.answer.status
            return self._graph_error(
                status, code, result.answer.message or "", headers=_retry_after(result.answer)
            )
        wamid = public_ref("whatsapp_cloud", result.response["id"])
        return json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": wamid}],
                "replay": result.response["replay"],
            }
        )

    @staticmethod
    def _graph_error(
        status: int,
        code: int,
        message: str,
        kind: str = "OAuthException",
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        return json_response(
            {"error": {"message": message, "type": kind, "code": code, "fbtrace_id": uuid.uuid4().hex[:12]}},
            status,
            headers,
        )

    # ---- Signal (signal-cli REST API) ---------------------------------------------------------------

    async def signal(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        credentials = _basic_auth(request.headers.get("Authorization", ""))
        if credentials is not None and not self._token_ok(credentials[1]):
            return json_response({"error": "Unauthorized"}, 401)
        try:
            body: Any = orjson.loads(await request.read())
            number = str(body["number"])
            recipients = [str(r) for r in body["recipients"]]
            message = str(body.get("message") or "")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return json_response({"error": f"Couldn't process request - invalid request: {exc!r}"}, 400)
        if len(recipients) != 1:
            return json_response({"error": "exactly one recipient per message in this mock"}, 400)
        if not message and not body.get("base64_attachments"):
            return json_response({"error": "Couldn't process request - message is empty"}, 400)
        if not number.startswith("+"):
            return json_response({"error": f"User {number} is not registered."}, 400)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return json_response({"error": "an Idempotency-Key header is required by the mock's ledger"}, 400)
        to = recipients[0]
        # signal-cli sends no delivery reports (they are read by polling its receive endpoint): none here.
        result = await self.mock.submit(provider, "signal", to, key)
        if isinstance(result, Refused):
            status, text = SIGNAL_TEXTS.get(result.answer.code or "", SIGNAL_TEXTS["SERVER_ERROR"])
            return json_response({"error": text.format(to=to)}, status, _retry_after(result.answer))
        timestamp = str(int(time.time() * 1000))
        return json_response({"timestamp": timestamp, "replay": result.response["replay"]}, 201)

    # ---- webhooks ----------------------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        provider, tail = request.match_info["provider"], request.match_info["tail"]
        body = await request.read()
        secret = self.mock.webhook_secret
        if not verify_timestamped(secret, body, request.headers.get(SWITCHBOARD_HEADER), time.time(), 300):
            return web.Response(status=401, text="bad signature")
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return web.Response(status=400, text="Idempotency-Key required")
        if tail.startswith("gone"):
            return web.Response(status=410, text="endpoint removed")
        result = await self.mock.submit(provider, "webhook", str(request.url), key, magic=tail)
        if isinstance(result, Refused):
            answer = result.answer
            return web.Response(status=answer.status, text=answer.message or "", headers=_retry_after(answer))
        headers = {
            "X-Request-Id": result.response["id"],
            "X-Replay": "true" if result.response["replay"] else "false",
        }
        return web.Response(status=200, text="ok", headers=headers)


def add_api_routes(app: web.Application, provider: MockProvider) -> None:
    apis = Apis(provider)
    app.router.add_post("/{provider}/2010-04-01/Accounts/{account}/Messages.json", apis.sms)
    app.router.add_post("/{provider}/{version:v[0-9.]+}/{phone_number_id}/messages", apis.whatsapp)
    app.router.add_post("/{provider}/v2/send", apis.signal)
    app.router.add_post("/hooks/{provider}/{tail:.+}", apis.webhook)
