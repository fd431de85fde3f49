"""Telling a person: the ``on_failure_callback`` of the checks that watch the champion (drift, outcomes).

The deployment chooses the channel with the setting ``alert`` (Variable ``xray_alert``, config ``[xray] alert``
or env ``XRAY_ALERT``):

- ``smtp:ops@example.org[,other@example.org]``: an e-mail through the SMTP provider's ``SmtpNotifier`` and the
  connection named by ``[email] email_conn_id`` (default ``smtp_default``);
- empty (the default): the message goes to the task log at WARNING, for a log-based alerting system to pick up.

Any other notifier (Slack, when ``apache-airflow-providers-slack`` is installed, ...) can be wired the same way:
``notify_person`` is an ordinary callback, ``DEFAULT_ARGS``-style, that receives the task context.
"""

from __future__ import annotations

import logging
from typing import Any

from xray_common import setting

log = logging.getLogger("xray.dags")


def message_of(context: dict[str, Any]) -> str:
    ti = context.get("ti") or context.get("task_instance")
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} (run {context.get('run_id', '?')})"
    return f"xray: {where} failed: {context.get('exception') or 'see the task log'}"


def notify_person(context: dict[str, Any]) -> None:
    """The failure callback: e-mail when ``alert`` says ``smtp:...``, else a WARNING line in the log."""
    text = message_of(context)
    target = setting("alert")
    if target.startswith("smtp:"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        to = [a.strip() for a in target[len("smtp:") :].split(",") if a.strip()]
        SmtpNotifier(to=to, subject=text[:120], html_content=f"<pre>{text}</pre>")(context)
        log.info("alert sent to %s", to)
    else:
        if target:
            log.warning("alert %r is not a known channel (smtp:<address>); logging instead", target)
        log.warning("ALERT %s", text)
