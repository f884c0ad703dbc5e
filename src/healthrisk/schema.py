"""The feature schema: the one definition of what a health-risk record is.

Every consumer (generator, loader, federated training, inference validation, drift
checks, MLflow signature, CRD docs) imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FeatureGroup(StrEnum):
    """Where a feature comes from, which decides how much it moves without drift."""

    PERSONAL = "personal"  # the patient's wearable and bedside measurements
    ENVIRONMENT = "environment"  # weather and air quality at the site


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    minimum: float
    maximum: float
    description: str
    group: FeatureGroup

    def rule(self) -> str:
        return f"{self.name} must be within [{self.minimum:g}, {self.maximum:g}] {self.unit}"


FEATURES: tuple[Feature, ...] = (
    Feature(
        "heart_rate", "beats/min", 20, 250, "resting heart rate from the wearable", FeatureGroup.PERSONAL
    ),
    Feature("steps", "steps/day", 0, 100_000, "daily step count", FeatureGroup.PERSONAL),
    Feature("sleep_hours", "hours", 0, 24, "sleep duration over the last night", FeatureGroup.PERSONAL),
    Feature("respiratory_rate", "breaths/min", 4, 70, "respiratory rate", FeatureGroup.PERSONAL),
    Feature("body_temp", "°F", 85, 115, "body temperature", FeatureGroup.PERSONAL),
    Feature("pm25", "µg/m³", 0, 1000, "fine particulate matter (PM2.5)", FeatureGroup.ENVIRONMENT),
    Feature("pm10", "µg/m³", 0, 2000, "coarse particulate matter (PM10)", FeatureGroup.ENVIRONMENT),
    Feature("o3", "ppm", 0, 1, "ozone", FeatureGroup.ENVIRONMENT),
    Feature("no2", "ppm", 0, 2, "nitrogen dioxide", FeatureGroup.ENVIRONMENT),
    Feature("temperature", "°F", -60, 140, "outdoor air temperature", FeatureGroup.ENVIRONMENT),
    Feature("humidity", "%", 0, 100, "outdoor relative humidity", FeatureGroup.ENVIRONMENT),
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
