"""Alerts on failed asset checks: the message and the webhook post, without Dagster.

The webhook URL is a secret (a Slack incoming-webhook URL is its own credential), so it is shown only
as `mask_webhook_url` gives it, and no message raised here contains it, nor chains an exception that
does.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

# Environment variable holding the webhook URL (Slack incoming webhook, or anything accepting its JSON).
WEBHOOK_URL_ENV = "DUAL_DB_ALERT_WEBHOOK_URL"

# Seconds to wait for the webhook: a tick must not hang on a stuck receiver (see ALERTS_PER_TICK).
POST_TIMEOUT_SECONDS = 5.0

# Text metadata longer than this is cut in the structured fields (a description can be long already).
MAX_TEXT_VALUE = 200


class AlertPostError(RuntimeError):
    """The webhook did not accept an alert. The message names the masked URL only."""


@dataclass(frozen=True)
class CheckFailure:
    """One asset-check evaluation that did not pass, as the alert reports it."""

    storage_id: int
    check: str
    asset: str
    severity: str
    run_id: str
    description: str | None
    # Scalar metadata only (numbers, booleans, short text): what fits in a chat message and a JSON field.
    metadata: Mapping[str, int | float | bool | str] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        """The description's first line: the checks put their summary (with the counts) there."""
        lines = (self.description or "").strip().splitlines()
        return lines[0].strip() if lines else "no description"


def mask_webhook_url(url: str) -> str:
    """Scheme and host only: everything after the host (path, query, user info) is the secret."""
    parsed = urllib.parse.urlsplit(url.strip())
    if not parsed.scheme or not parsed.hostname:
        return "***"
    port = f":{parsed.port}" if _has_valid_port(parsed) else ""
    return f"{parsed.scheme}://{parsed.hostname}{port}/***"


def _has_valid_port(parsed: urllib.parse.SplitResult) -> bool:
    try:
        return parsed.port is not None
    except ValueError:
        return False


def scalar_metadata(values: Mapping[str, object]) -> dict[str, int | float | bool | str]:
    """Keep the values an alert can show as they are; long text is cut, lists and tables left out."""
    kept: dict[str, int | float | bool | str] = {}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            continue  # NaN and infinities are not JSON: a strict receiver would refuse the whole alert
        if isinstance(value, bool | int | float):
            kept[key] = value
        elif isinstance(value, str):
            kept[key] = value if len(value) <= MAX_TEXT_VALUE else value[: MAX_TEXT_VALUE - 1] + "…"
    return kept


def alert_text(failure: CheckFailure) -> str:
    """Slack `text`: severity, check and asset, the summary line, then the numbers from metadata."""
    text = (
        f"[{failure.severity}] asset check `{failure.check}` on `{failure.asset}` failed: {failure.headline}"
    )
    numbers = [
        f"{key}={value}"
        for key, value in failure.metadata.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    if numbers:
        text += "\n" + ", ".join(numbers)
    return text + f"\nrun {failure.run_id}"


def alert_payload(failure: CheckFailure) -> dict[str, object]:
    """The JSON posted: Slack reads `text`; other receivers get the same facts as fields."""
    return {
        "text": alert_text(failure),
        "check": failure.check,
        "asset": failure.asset,
        "severity": failure.severity,
        "run_id": failure.run_id,
        "description": failure.description,
        "metadata": dict(failure.metadata),
    }


def post_alert(url: str, payload: Mapping[str, object], *, timeout: float = POST_TIMEOUT_SECONDS) -> int:
    """POST the payload as JSON; returns the HTTP status. Raises `AlertPostError` unless it is 2xx."""
    masked = mask_webhook_url(url)
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        reason = f"HTTP {error.code}"
    except urllib.error.URLError as error:
        reason = _scrub(str(error.reason), url)
    except (OSError, ValueError) as error:
        # ValueError: urllib rejects the URL itself, and its message would quote it whole.
        reason = type(error).__name__
    else:
        if 200 <= status < 300:
            return status
        reason = f"HTTP {status}"
    # `from None`: the chained urllib exception and its traceback may carry the full URL.
    raise AlertPostError(f"alert webhook {masked} did not accept the alert: {reason}") from None


def _scrub(message: str, url: str) -> str:
    """Belt and braces for messages that come from the network stack."""
    parsed = urllib.parse.urlsplit(url)
    for secret in (url, parsed.path, parsed.query, parsed.netloc):
        if secret and secret not in ("/",):
            message = message.replace(secret, "***")
    return message
