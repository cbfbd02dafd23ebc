"""The optimize report is written next to the model and agrees with the manifest."""

import json

from optimize.manifest import read_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_lists_every_candidate_and_the_shipped_one(digits_artifact):
    manifest = read_manifest(digits_artifact)
    report = json.loads((digits_artifact / "report.json").read_text())
    assert [c["name"] for c in report["candidates"]] == [c.name for c in manifest.candidates]
    shipped = next(c for c in manifest.candidates if c.name == report["shipped"])
    assert shipped.accepted and shipped.measurement == manifest.after
    assert report["machine"] == manifest.machine and isinstance(report["cpu_flags"], list)


def test_markdown_report_has_a_row_per_candidate_with_its_verdict(digits_artifact):
    manifest = read_manifest(digits_artifact)
    text = (digits_artifact / "report.md").read_text()
    for candidate in manifest.candidates:
        row = next(line for line in text.splitlines() if line.startswith(f"| {candidate.name} |"))
        assert ("accepted" if candidate.accepted else "rejected") in row


def test_plots_are_png_images(digits_artifact):
    for name in ("latency.png", "accuracy_size.png"):
        data = (digits_artifact / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000
