"""The enrolment vocabulary of the original platform (its model's choices,
the only values its frontend's types know), and how a stored user reads.

`PENDING_PAYMENT` is the default: a new account has not paid. A confirmed
Stripe payment makes it `ENROLLED`. `SUSPENDED`, `COMPLETED` and `WITHDRAWN`
are the original's other states (set by staff there; kept here so stored
data and clients agree on one list)."""
from __future__ import annotations

from typing import Literal, get_args

EnrollmentStatus = Literal["PENDING_PAYMENT", "ENROLLED", "SUSPENDED", "COMPLETED", "WITHDRAWN"]
ENROLLMENT_STATUSES: tuple[str, ...] = get_args(EnrollmentStatus)
DEFAULT_ENROLLMENT = "PENDING_PAYMENT"


def enrollment_of(user: dict) -> str:
    """The user's status in the vocabulary. Values of earlier versions
    (`NOT_ENROLLED`, missing) read as what the start-up migration stores."""
    status = user.get("enrollment_status")
    if status in ENROLLMENT_STATUSES:
        return status
    return "ENROLLED" if user.get("payment_verified") else DEFAULT_ENROLLMENT
