"""The worker of ``test_broker_loss``: the project's Celery app (:func:`workers.app.create_app`, so the
broker transport and settings production uses) with one task that writes down what it ran."""

from __future__ import annotations

import os
from pathlib import Path

from workers.app import create_app
from workers.settings import Settings

app = create_app(Settings(redis_url=os.environ["BROKER_LOSS_URL"], queue="broker-loss"))


@app.task(name="broker_loss.note")
def note(text: str) -> None:
    with Path(os.environ["BROKER_LOSS_NOTES"]).open("a") as notes:
        notes.write(f"{text}\n")
