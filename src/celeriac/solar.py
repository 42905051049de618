"""The ``solar`` schedule: run at sunrise, sunset, dawn, dusk or solar noon at a place.

NOAA's sunrise/sunset equations, so no ``ephem`` is needed.  Import it from here or, as in
Celery, from `celeriac.schedules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from .schedules import _DAY, BaseSchedule, _utc, schedstate

__all__ = ["solar"]

# event -> (solar zenith angle in degrees, -1 rising / 0 noon / +1 setting).  Sunrise and sunset
# are when the sun's upper edge meets the horizon: 90 degrees + 50' (16' radius, 34' refraction).
_SOLAR_EVENTS = {
    "dawn_astronomical": (108.0, -1),
    "dawn_nautical": (102.0, -1),
    "dawn_civil": (96.0, -1),
    "sunrise": (90.833, -1),
    "solar_noon": (90.0, 0),
    "sunset": (90.833, 1),
    "dusk_civil": (96.0, 1),
    "dusk_nautical": (102.0, 1),
    "dusk_astronomical": (108.0, 1),
}
_J2000 = datetime(2000, 1, 1, 12, tzinfo=UTC)


def _sun_position(moment: datetime) -> tuple[float, float]:
    """Return the sun's declination (radians) and the equation of time (minutes).

    NOAA's solar calculator equations (Meeus, "Astronomical Algorithms").
    """
    t = (moment - _J2000).total_seconds() / 86400 / 36525  # Julian centuries since J2000
    mean_long = math.radians((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360)
    anomaly = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    center = (
        math.sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + math.sin(2 * anomaly) * (0.019993 - 0.000101 * t)
        + math.sin(3 * anomaly) * 0.000289
    )
    omega = math.radians(125.04 - 1934.136 * t)
    apparent_long = math.radians(
        math.degrees(mean_long) + center - 0.00569 - 0.00478 * math.sin(omega)
    )
    mean_obliquity = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    obliquity = math.radians(mean_obliquity + 0.00256 * math.cos(omega))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent_long))
    y = math.tan(obliquity / 2) ** 2
    equation_of_time = 4 * math.degrees(
        y * math.sin(2 * mean_long)
        - 2 * eccentricity * math.sin(anomaly)
        + 4 * eccentricity * y * math.sin(anomaly) * math.cos(2 * mean_long)
        - 0.5 * y * y * math.sin(4 * mean_long)
        - 1.25 * eccentricity * eccentricity * math.sin(2 * anomaly)
    )
    return declination, equation_of_time


class solar(BaseSchedule):  # noqa: N801 - Celery's name
    """Run at a solar event at a place: sunrise, sunset, dawn, dusk or solar noon.

    Computed with NOAA's sunrise/sunset equations, so unlike Celery it needs no ``ephem``.
    Within a minute of PyEphem (Celery's results) up to 65 degrees of latitude; nearer the
    poles, a few minutes on the days an event starts or stops happening.  Events that don't
    happen on a day (no sunrise in the polar night) are skipped.

    Args:
        event: One of ``dawn_astronomical``, ``dawn_nautical``, ``dawn_civil``, ``sunrise``,
            ``solar_noon``, ``sunset``, ``dusk_civil``, ``dusk_nautical``,
            ``dusk_astronomical``.
        lat: Latitude in degrees, -90 to 90 (north positive).
        lon: Longitude in degrees, -180 to 180 (east positive).
        nowfun: Returns the current time (for tests).
        app: The app.
        tz: The zone ``now()`` reports in; events are instants, so it changes nothing else.

    Raises:
        ValueError: Unknown event, or latitude / longitude out of range.
    """

    #: How many days to look ahead for an event that doesn't happen every day.
    max_search_days = 366

    def __init__(
        self,
        event: str,
        lat: float,
        lon: float,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        *,
        tz: tzinfo | None = None,
    ) -> None:
        if event not in _SOLAR_EVENTS:
            raise ValueError(
                f"invalid solar event {event!r}, must be one of {', '.join(sorted(_SOLAR_EVENTS))}"
            )
        if not -90 <= lat <= 90:
            raise ValueError(f"invalid latitude {lat}, must be between -90 and 90")
        if not -180 <= lon <= 180:
            raise ValueError(f"invalid longitude {lon}, must be between -180 and 180")
        self.event = event
        self.lat = lat
        self.lon = lon
        super().__init__(nowfun=nowfun, app=app, tz=tz)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Return the time from now until the first event after ``last_run_at``.

        If none happens in ``max_search_days`` days, the time until the search ends instead.
        """
        return self._next_after(_utc(last_run_at)) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return ``schedstate(is_due, next)``.

        Due when the first event after ``last_run_at`` has passed; ``next`` is then the seconds
        to the first event after now.
        """
        return self._state(self._next_after(_utc(last_run_at)))

    def _next_after(self, moment: datetime) -> datetime:
        # A UTC day's event is near that day's solar noon at this longitude, which can be
        # half a day either side of UTC noon: start a day early.
        day = moment.date() - _DAY
        for _ in range(self.max_search_days + 2):
            event = self.event_on(day)
            if event is not None and event > moment:
                return event
            day += _DAY
        return datetime.combine(day, time(), UTC)

    def event_on(self, day: date) -> datetime | None:
        """Return the event of the solar day centred on ``day``'s local solar noon, in UTC.

        None when it doesn't happen that day (polar day or night).
        """
        zenith, direction = _SOLAR_EVENTS[self.event]
        latitude = math.radians(max(-89.99, min(89.99, self.lat)))  # the poles divide by 0
        midnight = datetime.combine(day, time(), UTC)
        minutes = 720.0 - 4 * self.lon + direction * 360  # first guess: noon -/+ 6 hours
        # Recompute the sun's position at each estimate: three passes agree to seconds.
        for _ in range(3):
            declination, equation_of_time = _sun_position(midnight + timedelta(minutes=minutes))
            cos_hour_angle = math.cos(math.radians(zenith)) / (
                math.cos(latitude) * math.cos(declination)
            ) - math.tan(latitude) * math.tan(declination)
            hour_angle = math.degrees(math.acos(max(-1.0, min(1.0, cos_hour_angle))))
            minutes = 720.0 - 4 * self.lon - equation_of_time + direction * 4 * hour_angle
        if direction and not -1 <= cos_hour_angle <= 1:
            return None
        return midnight + timedelta(seconds=round(minutes * 60))

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)
        return NotImplemented

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.event, self.lat, self.lon), self._pickle_state())
