"""Alerts to a configured notifier: a webhook (JSON POST) or, by default, the log."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from jobs.config import Env

log = logging.getLogger(__name__)


def notify(env: Env, title: str, details: dict[str, Any]) -> bool:
    """Send one alert; True when the webhook accepted it (a webhook that fails never fails the job)."""
    payload = {"title": title, **details}
    if not env.notifier_url:
        log.warning("ALERT %s %s", title, json.dumps(details, default=str, sort_keys=True))
        return False
    import requests

    where = urlsplit(env.notifier_url).netloc  # the URL may carry a token: never log it whole
    for attempt, delay in enumerate((1, 4, None), start=1):
        try:
            response = requests.post(env.notifier_url, json=payload, timeout=10)
            if response.status_code < 300:
                log.info("alert sent to %s: %s", where, title)
                return True
            log.warning("notifier at %s answered HTTP %d (attempt %d)", where, response.status_code, attempt)
        except requests.RequestException as exc:
            log.warning("notifier at %s unreachable (attempt %d): %s", where, attempt, type(exc).__name__)
        if delay:
            time.sleep(delay)
    log.warning("ALERT (notifier failed) %s %s", title, json.dumps(details, default=str, sort_keys=True))
    return False
