"""Reading the bridge's Prometheus endpoint from tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bridge.testing.ports import free_port

__all__ = ["free_port", "scrape"]


async def scrape(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:  # Trio side: httpx runs on trio natively
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" in sample.labels:
                continue
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
