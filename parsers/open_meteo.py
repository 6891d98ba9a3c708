"""The next days' weather for a place, from Open-Meteo: a CSV and a chart.

Fetches the daily forecast (https://api.open-meteo.com/v1/forecast: highest and lowest
temperature and precipitation) and returns:

- `forecast.csv`: one day a line: date, highest and lowest temperature (°C), precipitation (mm);
- `forecast.png`: a chart of the same: temperatures as lines, precipitation as bars.

Environment variables:

- `WEATHER_PLACE`, `WEATHER_LATITUDE`, `WEATHER_LONGITUDE`: the place (default Moscow, 55.7558, 37.6173);
- `WEATHER_DAYS`: how many days, 1 to 16 (default 7);
- `OPEN_METEO_BASE_URL`: the API (default `https://api.open-meteo.com`);
- `OPEN_METEO_TIMEOUT`: seconds to wait for it (default 30).
"""

import csv
import datetime
import io
import os

import requests
from PIL import Image, ImageDraw, ImageFont

USER_AGENT = "Parseq demo parser open_meteo (+https://github.com/parseq)"
SERIES = ["temperature_2m_max", "temperature_2m_min", "precipitation_sum"]
WIDTH, HEIGHT, MARGIN = 900, 460, 70
RED, BLUE, RAIN, GRID, INK = (214, 69, 65), (52, 101, 164), (150, 196, 235), (225, 225, 225), (40, 40, 40)


def settings():
    days = int(os.environ.get("WEATHER_DAYS", "7"))
    if not 1 <= days <= 16:
        raise ValueError(f"WEATHER_DAYS={days}: Open-Meteo forecasts 1 to 16 days")
    return {
        "place": os.environ.get("WEATHER_PLACE", "Moscow"),
        "latitude": float(os.environ.get("WEATHER_LATITUDE", "55.7558")),
        "longitude": float(os.environ.get("WEATHER_LONGITUDE", "37.6173")),
        "days": days,
    }


def fetch_forecast(place):
    url = os.environ.get("OPEN_METEO_BASE_URL", "https://api.open-meteo.com").rstrip("/") + "/v1/forecast"
    params = {
        "latitude": place["latitude"],
        "longitude": place["longitude"],
        "daily": ",".join(SERIES),
        "timezone": "auto",
        "forecast_days": place["days"],
    }
    timeout = float(os.environ.get("OPEN_METEO_TIMEOUT", "30"))
    try:
        response = requests.get(url, params=params, headers={"User-Agent": USER_AGENT}, timeout=timeout)
    except requests.RequestException as error:
        raise RuntimeError(f"GET {url} failed: {error}") from None
    if response.status_code != 200:
        raise RuntimeError(
            f"GET {response.url} answered {response.status_code} {response.reason}: {response.text[:200]}"
        )
    try:
        return response.url, response.json()
    except ValueError:
        raise RuntimeError(f"GET {response.url} did not return JSON") from None


def read_days(url, payload):
    daily = payload.get("daily") if isinstance(payload, dict) else None
    if not isinstance(daily, dict) or not isinstance(daily.get("time"), list):
        raise RuntimeError(f"{url}: the answer has no daily forecast")
    dates = daily["time"]
    for name in SERIES:
        values = daily.get(name)
        if not isinstance(values, list) or len(values) != len(dates):
            raise RuntimeError(f"{url}: daily.{name} is missing or does not match the {len(dates)} dates")
        if any(value is not None and not isinstance(value, int | float) for value in values):
            raise RuntimeError(f"{url}: daily.{name} holds something that is not a number")
    try:
        days = [datetime.date.fromisoformat(text) for text in dates]
    except (TypeError, ValueError):
        raise RuntimeError(f"{url}: daily.time holds something that is not a date") from None
    return [
        {"date": day, "high": high, "low": low, "rain": rain}
        for day, high, low, rain in zip(days, *(daily[name] for name in SERIES), strict=True)
    ]


def as_csv(rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["date", "temperature_max_c", "temperature_min_c", "precipitation_mm"])
    for row in rows:
        writer.writerow([row["date"].isoformat(), row["high"], row["low"], row["rain"]])
    return text.getvalue().encode("utf-8")


def chart(rows, place):
    """Temperatures as two lines over a scale in °C, precipitation as bars with their millimetres."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, title_font = ImageFont.load_default(size=13), ImageFont.load_default(size=18)
    title = f"{len(rows)}-day forecast for {place['place']} ({place['latitude']:.2f}, {place['longitude']:.2f})"
    draw.text((MARGIN, 18), title, fill=INK, font=title_font)
    temperatures = [value for row in rows for value in (row["high"], row["low"]) if value is not None]
    coldest, warmest = (min(temperatures), max(temperatures)) if temperatures else (0, 1)
    bottom, top = int(coldest // 5 * 5 - 5), int(warmest // 5 * 5 + 5)
    plot_top, plot_bottom = 60, HEIGHT - 60
    step = (WIDTH - 2 * MARGIN) / len(rows)

    def y_of(value):
        return plot_bottom - (value - bottom) / (top - bottom) * (plot_bottom - plot_top)

    for degrees in range(bottom, top + 1, 5):
        y = y_of(degrees)
        draw.line([(MARGIN, y), (WIDTH - MARGIN, y)], fill=GRID)
        draw.text((MARGIN - 8, y), f"{degrees}°C", fill=INK, font=font, anchor="rm")
    wettest = max([row["rain"] or 0 for row in rows] + [1])
    for index, row in enumerate(rows):
        x = MARGIN + step * (index + 0.5)
        if row["rain"]:
            height = row["rain"] / wettest * (plot_bottom - plot_top) * 0.3
            draw.rectangle([(x - step * 0.3, plot_bottom - height), (x + step * 0.3, plot_bottom)], fill=RAIN)
            draw.text((x, plot_bottom - height - 4), f"{row['rain']:g} mm", fill=INK, font=font, anchor="mb")
        draw.text((x, plot_bottom + 8), row["date"].strftime("%a %d %b"), fill=INK, font=font, anchor="mt")
    for key, color in (("high", RED), ("low", BLUE)):
        points = [
            (MARGIN + step * (index + 0.5), y_of(row[key])) for index, row in enumerate(rows) if row[key] is not None
        ]
        if len(points) > 1:
            draw.line(points, fill=color, width=3)
        for (x, y), row in zip(points, [row for row in rows if row[key] is not None], strict=True):
            draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=color)
            draw.text((x, y - 8), f"{row[key]:g}", fill=color, font=font, anchor="mb")
    legend = [("highest °C", RED), ("lowest °C", BLUE), ("precipitation, mm", RAIN)]
    for index, (label, color) in enumerate(legend):
        x = WIDTH - MARGIN - 170
        y = 20 + index * 14
        draw.rectangle([(x, y + 2), (x + 10, y + 12)], fill=color)
        draw.text((x + 16, y), label, fill=INK, font=font)
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


def parse():
    place = settings()
    url, payload = fetch_forecast(place)
    rows = read_days(url, payload)
    print(f"{len(rows)} days for {place['place']} from {url}")
    return {"forecast.csv": as_csv(rows), "forecast.png": chart(rows, place)}
