"""The feature schema: the one definition of what a health-risk record is.

Every consumer (generator, loader, federated training, inference validation, drift
checks, MLflow signature, CRD docs) imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    minimum: float
    maximum: float
    description: str

    def rule(self) -> str:
        return f"{self.name} must be within [{self.minimum:g}, {self.maximum:g}] {self.unit}"


FEATURES: tuple[Feature, ...] = (
    Feature("heart_rate", "beats/min", 20, 250, "resting heart rate from the wearable"),
    Feature("steps", "steps/day", 0, 100_000, "daily step count"),
    Feature("sleep_hours", "hours", 0, 24, "sleep duration over the last night"),
    Feature("respiratory_rate", "breaths/min", 4, 70, "respiratory rate"),
    Feature("body_temp", "°F", 85, 115, "body temperature"),
    Feature("pm25", "µg/m³", 0, 1000, "fine particulate matter (PM2.5)"),
    Feature("pm10", "µg/m³", 0, 2000, "coarse particulate matter (PM10)"),
    Feature("o3", "ppm", 0, 1, "ozone"),
    Feature("no2", "ppm", 0, 2, "nitrogen dioxide"),
    Feature("temperature", "°F", -60, 140, "outdoor air temperature"),
    Feature("humidity", "%", 0, 100, "outdoor relative humidity"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
N_FEATURES = len(FEATURES)

LABEL = "high_risk"
SITE_COLUMN = "site"
DATE_COLUMN = "date"

EXAMPLE_RECORD: dict[str, float] = {
    "heart_rate": 75,
    "steps": 8000,
    "sleep_hours": 7.5,
    "respiratory_rate": 16,
    "body_temp": 98.6,
    "pm25": 15,
    "pm10": 25,
    "o3": 0.05,
    "no2": 0.02,
    "temperature": 72,
    "humidity": 50,
}


def as_json_schema() -> dict[str, object]:
    """The schema as JSON Schema properties, for `/model` and documentation."""
    return {
        "type": "object",
        "required": list(FEATURE_NAMES),
        "additionalProperties": False,
        "properties": {
            f.name: {
                "type": "number",
                "minimum": f.minimum,
                "maximum": f.maximum,
                "description": f"{f.description} ({f.unit})",
            }
            for f in FEATURES
        },
    }
