"""The dates and sites the drift tests share (conftest fixtures build the data)."""

from __future__ import annotations

from healthrisk.data.generator import DriftSpec
from healthrisk.data.window import DateWindow

REFERENCE = DateWindow.parse("2024-01-01..2024-01-10")
NEW_DAYS = DateWindow.parse("2024-01-11..2024-01-16")
SMOKE = DriftSpec.parse("smoke:hospital_01:2024-01-14..2024-01-16")
SMOKE_WINDOW = DateWindow.parse("2024-01-14..2024-01-15")  # the shape of `retrain --if-drift`
QUIET_WINDOW = DateWindow.parse("2024-01-11..2024-01-13")  # new days, no drift anywhere
SITES = ("hospital_01", "hospital_02", "hospital_03")
